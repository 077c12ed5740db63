"""What a store lets in and what it claims: no non-finite value is ever committed or called healthy,
maintenance touches only names of its own layout, and a path inside a store can be recognised."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
import xxhash
import zarr

from agencerdas.stores import ArraySpec, Store, content_key, default_codec, find_store_root
from agencerdas.stores.errors import AgencerdasError

SPEC = ArraySpec(columns=4, dtype="float32", chunk_frames=16, codec=default_codec())


def finite(rows: int = 40) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((rows, 4)).astype(np.float32)


def put(store: Store, k: str, array: np.ndarray, spec: ArraySpec = SPEC) -> None:
    with store.write("features", k, {}) as writer:
        writer.create("feats", spec)
        writer.append("feats", array[:20])
        writer.append("feats", array[20:])


@pytest.mark.parametrize("dtype, value", [("float32", np.nan), ("float32", -np.inf), ("float16", 1e5)])
def test_a_block_with_non_finite_values_is_refused_and_nothing_is_committed(tmp_path, dtype, value):
    """1e5 is finite in float32 and inf once stored as float16: the check is on the stored values."""
    store = Store(tmp_path / "store")
    k = content_key("bad")
    array = finite()
    array[25, 2] = value
    with pytest.raises(AgencerdasError, match=rf"features entry {k}: array 'feats' would hold NaN or infinity "
                                              rf"in rows 20-39 \(as {dtype}\); nothing was committed"):
        put(store, k, array, ArraySpec(4, dtype, 16, default_codec()))
    assert not store.has("features", k) and store.keys("features") == []
    report = store.verify()
    assert report.ok and report.checked == 0  # no leftover either


def test_verify_reports_an_intact_entry_holding_non_finite_values(tmp_path):
    """An entry committed before the writer refused NaN (its checksum matches) is still unusable."""
    store = Store(tmp_path / "store")
    k = content_key("old")
    put(store, k, finite())
    entry = Path(store._path("features", k))
    array = zarr.open_array(store=zarr.storage.LocalStore(entry / "feats"), mode="r+")
    values = array[:]
    values[3, 1] = np.nan
    values[30, 0] = np.inf
    array[:] = values
    commit = json.loads((entry / "commit.json").read_text())
    commit["arrays"]["feats"]["xxh3"] = xxhash.xxh3_128_hexdigest(values.tobytes())
    (entry / "commit.json").write_text(json.dumps(commit))

    report = store.verify()
    assert report.checked == 1
    assert [path for path, _ in report.problems] == [f"{entry}/feats"]
    assert "2 of 160 values are NaN or infinite" in report.problems[0][1]
    assert store.verify(checksums=False).ok  # without reading the data there is nothing to see


def _foreign_names(root: str, write) -> list[str]:
    """Put what a user might keep inside a store: run directories and notes, beside real entries."""
    paths = [f"{root}/features/x/log.txt", f"{root}/features/runs/calls/best.pt", f"{root}/labels/abc/notes.md",
             f"{root}/features/{'a' * 31}/file", f"{root}/_tmp/my-run/metrics.json", f"{root}/views/plots/a.tmp"]
    for path in paths:
        write(path)
    return paths


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_verify_and_gc_leave_names_that_are_not_the_store_s_alone(tmp_path, kind):
    store = Store(tmp_path / "store" if kind == "local" else f"memory://agencerdas-test-{uuid.uuid4().hex}")
    k = content_key("kept")
    put(store, k, finite())

    def write(path: str) -> None:
        store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        store.fs.pipe_file(path, b"user data")

    foreign = _foreign_names(store.root, write)
    report = store.verify()
    assert report.ok and report.checked == 1, report.problems
    assert store.keys("features") == [k]
    assert store.gc(keep=set(), dry_run=True, min_age_s=0) == [store._path("features", k)]
    store.gc(keep={k}, min_age_s=0)  # `store gc --all` keeping what a view names
    assert all(store.fs.exists(path) for path in foreign)
    store.gc(keep=set(), min_age_s=0)
    assert all(store.fs.exists(path) for path in foreign) and store.keys("features") == []


def test_find_store_root_recognises_paths_inside_a_store(tmp_path):
    root = tmp_path / "store"
    Store(root)
    assert find_store_root(root) == root.resolve()
    assert find_store_root(root / "features" / "runs" / "not-yet-created") == root.resolve()
    assert find_store_root(tmp_path) is None
    assert find_store_root(tmp_path / "elsewhere" / "run") is None
    os.symlink(root / "features", tmp_path / "link")
    assert find_store_root(tmp_path / "link" / "run") == root.resolve()  # a link into a store is inside it
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert find_store_root("runs/x") == root.resolve()  # relative to the working directory
    finally:
        os.chdir(cwd)
    # another program's store.json, or a damaged one, is no agencerdas store
    other = tmp_path / "webapp"
    other.mkdir()
    (other / "store.json").write_text(json.dumps({"format": "redux", "version": 1}))
    assert find_store_root(other / "out") is None
    (other / "store.json").write_text("{not json")
    assert find_store_root(other / "out") is None
