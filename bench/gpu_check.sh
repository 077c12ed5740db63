#!/usr/bin/env bash
# The GPU check of the trainer (bench/gpu_check.py), for a machine with CUDA and torch but no
# package registry, in two halves:
#
#   bench/gpu_check.sh prepare        here, where pip reaches a registry: the few wheels such a
#                                     machine lacks (zarr, numcodecs, pyannote.metrics, ...) into
#                                     .whl/ (about 10 MB; ignored by git), at this venv's versions;
#                                     then proves they install with --no-index and import in a fresh
#                                     Python PY_VERSION venv holding only what the GPU image holds
#   bench/gpu_check.sh run [OUT_DIR]  there, from the repository root with .whl/ carried along:
#                                     installs them into /tmp/site and runs the check (a synthetic
#                                     135-recording store made on the spot; about 5 minutes on an
#                                     H100/H200), printing the table and writing OUT_DIR/gpu-check.json
#   bench/gpu_check.sh tiny           the same code on this CPU in seconds (what the tests run)
#
# PY_VERSION (default 3.12) is the GPU machine's Python, for `prepare`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# What the trainer needs beyond numpy/scipy/pandas/torch/tqdm/psutil/fsspec/xxhash, which such
# images carry; each at the version this checkout's .venv uses.
CARRY="zarr numcodecs donfig google-crc32c pyannote.core pyannote.database pyannote.metrics sortedcontainers"
# What the GPU image already holds that the carried packages import (KINDS.md's package list).
IMAGE="numpy scipy pandas tqdm psutil fsspec xxhash joblib matplotlib packaging pyyaml typing-extensions"
# The imports `bench.gpu_check` makes of the carried packages.
IMPORTS="import zarr, numcodecs, pyannote.core, pyannote.database, pyannote.metrics.diarization, sortedcontainers"

case "${1:-}" in
  prepare)
    rm -rf .whl && mkdir -p .whl
    grep -qxF "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
    for name in $CARRY; do
      version=$(.venv/bin/python -c "from importlib.metadata import version; print(version('$name'))")
      "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "${PY_VERSION:-3.12}" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        --platform manylinux_2_5_x86_64 -d .whl "$name==$version"
    done
    # The project itself, as installed (agencerdas.bench, agencerdas.training, ...): the checkout's folders
    # are not importable under that namespace without installing.
    .venv/bin/python -m pip wheel --quiet --no-deps -w .whl .
    du -sh .whl
    # The proof, before any device time is spent: a fresh venv of the GPU machine's Python with the image's
    # packages (from the registry) and the carried wheels (--no-index, as there) imports what the check imports.
    check=$(mktemp -d)
    py=""
    for candidate in "python${PY_VERSION:-3.12}" "$HOME"/.pyenv/versions/"${PY_VERSION:-3.12}"*/bin/python; do
      if "$candidate" -c "" 2>/dev/null; then py=$candidate; break; fi  # a pyenv shim may exist and not run
    done
    if [ -z "$py" ]; then
      echo "no Python ${PY_VERSION:-3.12} here to prove the wheels import; install one (pyenv, apt)" >&2
      exit 1
    fi
    "$py" -m venv "$check/venv"
    "$check/venv/bin/pip" install --quiet $IMAGE
    "$check/venv/bin/pip" install --quiet --no-index --no-deps .whl/*.whl
    (cd "$check" && "$check/venv/bin/python" -c "$IMPORTS; import agencerdas.stores; print('carried wheels import in a fresh Python', __import__('sys').version.split()[0])")
    rm -rf "$check"
    ;;
  run)
    out=${2:-${OUT:-.}}
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    out=$(cd "$out" && pwd)
    # From outside the checkout: its agencerdas/ folder would shadow the installed namespace.
    (cd /tmp && PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 "$PY" -m agencerdas.bench.gpu_check --out "$out/gpu-check.json")
    ;;
  tiny)
    "${PYTHON:-.venv/bin/python}" -m agencerdas.bench.gpu_check --tiny --recordings 6 --steps 3 \
      --work "$(mktemp -d)"
    ;;
  *)
    sed -n '2,17p' "$0" >&2
    exit 2
    ;;
esac
