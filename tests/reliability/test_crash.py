"""Crashes for real: SIGKILL of `agencerdas features` and `agencerdas train` at seeded random moments
and at the worst moments (mid-commit, mid-view, mid-checkpoint), then invariants; disk full and
permission denied injected into the store writes.

The processes are forked from a warm server (tests/reliability/_zygote.py) so that each trial costs
the work itself, not seconds of imports; each child is the real CLI in its own process group and is
killed with SIGKILL, group and all.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from agencerdas.pipeline import FeaturesRequest, build_features
from agencerdas.stores import Store, load_view
from agencerdas.stores.store import COMMIT, KINDS
from tests.builders import make_corpus
from tests.reliability.helpers import (Zygote, assert_entries_match, assert_no_traceback, leftover_only, snapshot,
                                       view_entries)

#: Seeded kill times; set AGENCERDAS_CRASH_SEED to explore other moments.
SEED = int(os.environ.get("AGENCERDAS_CRASH_SEED", "20240611"))
FEATURE_TRIALS = 24


@pytest.fixture(scope="module")
def zygote():
    server = Zygote(torch=True)  # one warm server for the features and the training trials
    yield server
    server.close()


def _features_argv(audio: Path, rttm: Path, store: Path) -> list[str]:
    return ["features", str(audio), "--store", str(store), "--rttm-dir", str(rttm), "--jobs", "1", "--quiet"]


def check_invariants(path: Path, clean: Store, ref: dict, clean_view: dict) -> int:
    """After a crash: no committed entry differs from a clean build, leftovers are untrusted, the view
    (when there is one) is whole and names only committed entries. Returns the committed entry count."""
    if not (path / "store.json").exists():
        return 0  # killed before the store was created
    store = Store(path, create=False)  # store.json is never half written
    report = store.verify()
    assert leftover_only(report) == [], report.problems
    checked = assert_entries_match(store, clean, ref)
    assert report.checked == checked
    # Readers never trust a partial: a key whose only copy is a leftover does not exist for them.
    for leftover, _ in report.problems:
        name = Path(leftover).name
        kind, _, rest = name.partition("-")
        key = rest.split("-")[0] if kind in KINDS else name
        kind = kind if kind in KINDS else Path(leftover).parent.name
        if kind in KINDS and not (Path(store._path(kind, key)) / COMMIT).exists():
            assert not store.has(kind, key) and key not in store.keys(kind)
    if "default" in store.view_names():
        entries = view_entries(store)
        assert entries == clean_view  # a view is written whole, after every entry it names
        for features, labels in entries.values():
            assert store.has("features", features) and store.has("labels", labels)
    return checked


def _drop_some(path: Path, rng: np.random.Generator, fraction: float = 0.5) -> int:
    """Make work for the next trial: remove the view and a random ``fraction`` of the committed
    entries (commit marker first, as gc would leave them if interrupted). Returns how many are missing."""
    (path / "views" / "default.json").unlink(missing_ok=True)
    committed = 0
    for kind in KINDS:
        base = path / kind
        for entry in sorted(base.iterdir()) if base.exists() else []:
            if (entry / COMMIT).exists() and rng.random() < fraction:
                (entry / COMMIT).unlink()
                if rng.random() < 0.7:
                    shutil.rmtree(entry)  # else: a partial entry without marker stays for the next run
            committed += (entry / COMMIT).exists()
    return 12 - committed


def test_sigkill_features_at_random_moments_never_corrupts_and_rerun_completes(zygote, tmp_path):
    audio, rttm = make_corpus(tmp_path / "corpus", n=6, seconds=4.0)
    clean_path, path = tmp_path / "clean", tmp_path / "crashed"

    start = time.monotonic()
    status, out, err = zygote.run(_features_argv(audio, rttm, clean_path), tmp_path / "logs" / "clean")
    run_s = time.monotonic() - start
    assert status == 0, out + err
    clean = Store(clean_path, create=False)
    ref, clean_view = snapshot(clean), view_entries(clean)
    assert len(ref) == 12 and clean.verify().ok

    rng = np.random.default_rng(SEED)
    landed = trials = 0
    while landed < FEATURE_TRIALS and trials < 2 * FEATURE_TRIALS:
        missing = _drop_some(path, rng) if path.exists() else 12
        # spread the kill over this run's work (planning and the view cost a little even with nothing to do)
        kill_after = float(rng.uniform(0.0, 0.1 + run_s * missing / 12))
        status, out, err = zygote.run(_features_argv(audio, rttm, path), tmp_path / "logs" / f"t{trials}",
                                      kill_after=kill_after)
        assert status in (-9, 0), f"trial {trials}: status {status}\n{out}\n{err}"
        assert_no_traceback(out, err)
        landed += status == -9
        trials += 1
        if status == 0:
            run_s *= 0.8  # the machine got faster than the clean run measured: aim earlier
        check_invariants(path, clean, ref, clean_view)
    print(f"features: {landed} SIGKILLs landed mid-run in {trials} trials")
    assert landed == FEATURE_TRIALS, f"only {landed} kills landed mid-run"

    # The worst moments, deterministically: a finished entry in _tmp just before its rename, and a
    # complete view file just before it replaces the old one.
    _drop_some(path, rng, fraction=1.0)
    for pause in ({"at": "commit", "nth": 2}, {"at": "view"}):
        signal_path = tmp_path / f"paused-{pause['at']}"
        status, out, err = zygote.run(_features_argv(audio, rttm, path), tmp_path / "logs" / pause["at"],
                                      pause={**pause, "signal": str(signal_path)}, kill_when=signal_path.exists)
        assert status == -9 and signal_path.exists(), out + err
        check_invariants(path, clean, ref, clean_view)
    store = Store(path, create=False)
    assert any(p.endswith(".tmp") for p, _ in store.verify().problems), "the paused view write left its temp file"
    assert any("/_tmp/" in p for p, _ in store.verify().problems)

    # A rerun completes the store.
    status, out, err = zygote.run(_features_argv(audio, rttm, path), tmp_path / "logs" / "rerun")
    assert status == 0 and "failed 0" in out, out + err
    check_invariants(path, clean, ref, clean_view)

    # Fresh leftovers may be writes in progress elsewhere: plain gc keeps them, verify still reports them.
    status, out, _ = zygote.run(["store", "verify", "--store", str(path)], tmp_path / "logs" / "verify1")
    assert status == 1 and "orphan of an interrupted write" in out
    status, out, _ = zygote.run(["store", "gc", "--store", str(path)], tmp_path / "logs" / "gc1")
    assert status == 0 and "removed 0 path(s)" in out, out
    # Once old enough (or with --all), gc removes everything the crashes left.
    status, out, err = zygote.run(["store", "gc", "--all", "--store", str(path)], tmp_path / "logs" / "gc2")
    assert status == 0 and "removed 0 path(s)" not in out, out + err
    status, out, _ = zygote.run(["store", "verify", "--store", str(path)], tmp_path / "logs" / "verify2")
    assert status == 0 and "0 problem(s)" in out, out
    assert not any((path / "_tmp").iterdir()) if (path / "_tmp").exists() else True
    assert sorted(os.listdir(path / "views")) == ["default.json"]

    # Key for key, array for array, the crashed-and-resumed store is the clean build.
    store = Store(path, create=False)
    assert set(snapshot(store)) == set(ref)
    assert assert_entries_match(store, clean, ref) == len(ref)
    assert view_entries(store) == clean_view


# ------------------------------------------------------------------ disk full / permission denied


class _FailingWrites:
    """Makes every file opened for writing under ``root`` fail with ``err`` after ``allow`` opens."""

    def __init__(self, root: Path, err: int, allow: int):
        self.root, self.err, self.allow, self.failed = str(root), err, allow, 0
        self._open, self._io_open = builtins.open, io.open

    def _wrap(self, real):
        def opener(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and str(file).startswith(self.root) and any(m in mode for m in "wax+"):
                if self.allow <= 0:
                    self.failed += 1
                    raise OSError(self.err, os.strerror(self.err), str(file))
                self.allow -= 1
            return real(file, mode, *args, **kwargs)

        return opener

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(builtins, "open", self._wrap(self._open))
        monkeypatch.setattr(io, "open", self._wrap(self._io_open))


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES], ids=["disk-full", "permission-denied"])
def test_store_write_errors_are_reported_and_committed_entries_stay_valid(err, tmp_path, monkeypatch, capsys):
    from agencerdas.cli import main

    audio, rttm = make_corpus(tmp_path / "corpus", n=4, seconds=2.0)
    path = tmp_path / "store"
    first = build_features(FeaturesRequest(audio, str(path), rttm_dir=rttm, progress=False))
    assert first.ok
    committed = snapshot(Store(path, create=False))
    for extra in ("late_a", "late_b"):  # two new recordings that will not fit
        shutil.copy(audio / "rec00.wav", audio / f"{extra}.wav")
        with open(audio / f"{extra}.wav", "ab") as handle:
            handle.write(extra.encode())  # other bytes, so other keys: real work to write

    # The device fails after a few writes (mid-entry), and then on every write, the view's included.
    failing = _FailingWrites(path, err, allow=3)
    failing.install(monkeypatch)
    # --jobs 1: the injected failures live in this process, so the writes must happen here too.
    rc = main(["features", str(audio), "--store", str(path), "--rttm-dir", str(rttm), "--quiet", "--jobs", "1"])
    monkeypatch.undo()
    captured = capsys.readouterr()
    assert rc == 1, captured.out + captured.err
    assert failing.failed > 0
    assert_no_traceback(captured.out, captured.err)
    reason = os.strerror(err)
    for extra in ("late_a", "late_b"):
        line = next((l for l in captured.out.splitlines() if f"{extra}.wav" in l), "")
        assert reason in line, captured.out
    assert "default.json" in captured.out and reason in captured.out  # the view could not be written either

    store = Store(path, create=False)
    report = store.verify()
    assert report.ok, report.problems  # nothing half written is left, nothing committed is damaged
    for (kind, key), arrays in committed.items():
        for name, array in arrays.items():
            np.testing.assert_array_equal(store.open(kind, key)[name][:], array)
    assert sorted(load_view(store, "default").recordings) == ["rec00", "rec01", "rec02", "rec03"]

    # Space back: a rerun does only the missing work.
    again = build_features(FeaturesRequest(audio, str(path), rttm_dir=rttm, progress=False))
    assert again.ok and again.reused == 4 and again.computed == 2, again.format()
    assert store.verify().ok


# ------------------------------------------------------------------------------ training

TRAIN_TRIALS = 3
EPOCHS = 3
TINY = ["DIM=16", "BLOCKS=1", "HEADS=2", "WINDOW=40", "NUM_WORKERS=0", "DER_EVERY=0", "CHECKPOINT_EVERY=1",
        "DEVICE=cpu", "PRECISION=fp32", f"EPOCHS={EPOCHS}", "LOG_EVERY=1"]


def _after_step(metrics: Path, step: int, delay: float):
    """A kill condition: ``delay`` seconds after this run logged optimizer step ``step`` (LOG_EVERY=1),
    so kills land at spread-out points of the run: mid-epoch, mid-step, mid-checkpoint."""
    seen: list[float] = []
    old = len(metrics.read_text().splitlines()) if metrics.exists() else 0

    def ready() -> bool:
        if not seen and metrics.exists():
            lines = metrics.read_text().splitlines()[old:]
            logged = [json.loads(line) for line in lines if '"kind": "step"' in line and line.endswith("}")]
            if logged and logged[-1]["step"] >= step:
                seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] >= delay

    return ready


def test_sigkill_training_mid_epoch_and_mid_checkpoint_then_resume_finishes_identically(zygote, tmp_path):
    import torch

    from agencerdas.training.checkpoint import load_checkpoint

    audio, rttm = make_corpus(tmp_path / "corpus", n=6, seconds=12.0)
    store = tmp_path / "store"
    status, out, err = zygote.run(_features_argv(audio, rttm, store), tmp_path / "logs" / "features")
    assert status == 0, out + err

    def train(run: Path, name: str, *extra: str, **kwargs):
        argv = ["train", "--store", str(store), "--view", "default", "--out", str(run), "--quiet", *extra, *TINY]
        return zygote.run(argv, tmp_path / "logs" / name, **kwargs)

    reference = tmp_path / "reference"
    start = time.monotonic()
    status, out, err = train(reference, "reference")
    run_s = time.monotonic() - start
    assert status == 0, out + err
    expected = load_checkpoint(reference / "last.pt")
    assert expected["epoch"] == EPOCHS and expected["batch_in_epoch"] == 0

    run = tmp_path / "run"
    last = run / "last.pt"
    rng = np.random.default_rng(SEED)
    steps = [0]
    landed = 0
    for trial in range(TRAIN_TRIALS):
        target = min(steps[-1] + int(rng.integers(1, 3)), expected["step"] - 2)
        delay = float(rng.uniform(0.0, 0.5 * run_s / expected["step"]))  # within about one step
        resume = ("--resume",) if last.exists() else ()
        status, out, err = train(run, f"t{trial}", *resume, kill_when=_after_step(run / "metrics.jsonl", target, delay))
        assert status in (-9, 0), out + err
        assert_no_traceback(out, err)
        landed += status == -9
        ckpt = load_checkpoint(last)  # always loadable: never half a file
        if (run / "best.pt").exists():
            load_checkpoint(run / "best.pt")
        assert ckpt["step"] >= steps[-1]
        steps.append(ckpt["step"])
    print(f"training: {landed}/{TRAIN_TRIALS} SIGKILLs landed mid-run, checkpoints at steps {steps[1:]}")
    assert landed >= TRAIN_TRIALS - 1

    # Mid-checkpoint-write, deterministically: half of the new checkpoint is on disk when the kill lands.
    before = load_checkpoint(last)
    signal_path = tmp_path / "paused-save"
    status, out, err = train(run, "mid-save", "--resume", pause={"at": "save", "nth": 2, "signal": str(signal_path)},
                             kill_when=signal_path.exists)
    assert status == -9 and signal_path.exists(), out + err
    after = load_checkpoint(last)
    assert after["step"] >= before["step"]  # whatever the paused write was, it never replaced last.pt
    assert any(p.name.endswith(".tmp") for p in run.iterdir())  # the half-written temporary file

    status, out, err = train(run, "final", "--resume")
    assert status == 0, out + err
    final = load_checkpoint(last)
    assert (final["epoch"], final["batch_in_epoch"], final["step"]) == (EPOCHS, 0, expected["step"])
    # The run killed again and again ends exactly where the uninterrupted one did.
    different = [k for k in expected["model"] if not torch.equal(expected["model"][k], final["model"][k])]
    assert not different, f"weights differ after crash + resume: {different}"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert all(line.startswith("{") and line.endswith("}") for line in lines), "a torn metrics line"


def test_checkpoint_temporaries_of_killed_writers_are_removed_once_stale(tmp_path):
    import torch

    from agencerdas.training.checkpoint import STALE_TMP_S, save_checkpoint

    stale, fresh = tmp_path / ".last.pt.dead0001.tmp", tmp_path / ".last.pt.live0002.tmp"
    for p in (stale, fresh):
        p.write_bytes(b"half a checkpoint")
    then = time.time() - STALE_TMP_S - 60
    os.utime(stale, (then, then))
    save_checkpoint(tmp_path / "last.pt", {"config": {}, "step": 1})
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 1
    assert not stale.exists() and fresh.exists()  # a fresh one may be another writer's, mid-write
