"""Several processes on one store at once: two feature builders, creators racing for store.json,
a trainer's reader while entries are added and the view rewritten, and gc during a write."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agencerdas.pipeline import FeaturesRequest, build_features
from agencerdas.stores import ArraySpec, EntryReader, Store, content_key, load_view
from agencerdas.stores import default_codec
from tests.builders import make_corpus
from tests.reliability.helpers import (assert_entries_match, assert_no_traceback, cli_popen, snapshot,
                                       view_entries)


def test_two_feature_runs_on_one_store_at_once_write_identical_entries_and_both_succeed(tmp_path):
    audio, rttm = make_corpus(tmp_path / "corpus", n=6, seconds=4.0)
    path = tmp_path / "store"  # does not exist yet: both processes race to create it too
    argv = ["features", str(audio), "--store", str(path), "--rttm-dir", str(rttm), "--jobs", "1", "--quiet"]
    procs = [cli_popen(*argv) for _ in range(2)]
    outputs = [proc.communicate(timeout=180) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, out + err
        assert "failed 0" in out
        assert_no_traceback(out, err)

    reference = tmp_path / "reference"
    assert build_features(FeaturesRequest(audio, str(reference), rttm_dir=rttm, progress=False)).ok
    clean = Store(reference, create=False)
    store = Store(path, create=False)
    report = store.verify()
    assert report.ok, report.problems  # the loser of each commit race removed its copy
    ref = snapshot(clean)
    assert set(snapshot(store)) == set(ref) and assert_entries_match(store, clean, ref) == 12
    assert view_entries(store) == view_entries(clean)


def _create(path: str, barrier, errors) -> None:
    barrier.wait()
    try:
        Store(path)
    except Exception as exc:  # noqa: BLE001 - collected for the assertion
        errors.put(f"{type(exc).__name__}: {exc}")
    else:
        errors.put("")


def test_processes_creating_one_new_store_at_once_all_open_it(tmp_path):
    """Before the fix, about one in ten of these races failed: a half-written store.json read as
    damaged, or the first creator's marker seen as 'a non-empty directory without store.json'."""
    ctx = multiprocessing.get_context("fork")
    failures = []
    for trial in range(12):
        barrier, errors = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_create, args=(str(tmp_path / f"s{trial}"), barrier, errors)) for _ in range(6)]
        for proc in procs:
            proc.start()
        failures += [errors.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join(60)
        assert sorted(p.name for p in (tmp_path / f"s{trial}").iterdir()) == ["store.json"]
    assert [f for f in failures if f] == []


def test_trainer_keeps_reading_while_features_add_entries_and_rewrite_the_view(tmp_path):
    from agencerdas.training.data import WindowDataset
    from agencerdas.training.windows import Normalizer

    audio, rttm = make_corpus(tmp_path / "corpus", n=3, seconds=12.0)
    path = tmp_path / "store"
    assert build_features(FeaturesRequest(audio, str(path), rttm_dir=rttm, progress=False)).ok
    store = Store(path, create=False)
    before = view_entries(store)
    old = snapshot(store)
    more_audio, more_rttm = make_corpus(tmp_path / "more", n=7, seconds=12.0)
    for i in range(3, 7):  # four new recordings for the running features process to add
        shutil.copy(next(more_audio.glob(f"rec{i:02d}.*")), audio)
        shutil.copy(more_rttm / f"rec{i:02d}.rttm", rttm)

    proc = cli_popen("features", str(audio), "--store", str(path), "--rttm-dir", str(rttm), "--jobs", "1", "--quiet")
    reads, views_seen = 0, set()
    normalizer = Normalizer(np.zeros(80, np.float32), np.ones(80, np.float32))
    while proc.poll() is None or reads < 3:
        reader_store = Store(path, create=False)
        view = load_view(reader_store, "default")  # never half a file: the old view or the new one
        views_seen.add(len(view.recordings))
        recs = [view.recordings[r] for r in sorted(view.recordings)]
        lengths = [r.frames for r in recs]
        dataset = WindowDataset(str(path), {}, recs, lengths, 15, 40, "stack", 4, normalizer, cache_mb=0)
        for index, rec in enumerate(recs):
            item = dataset[(index, 0)]
            assert item["feats"].shape == (40, 1200) and item["labels"].shape == (40, 4)
            assert bool(item["mask"].all())
            if ("features", rec.features) in old:  # committed entries never change under a reader
                entry = EntryReader(reader_store, rec.features, rec.labels)
                np.testing.assert_array_equal(entry.features[:], old[("features", rec.features)]["feats"])
                np.testing.assert_array_equal(entry.labels[:], old[("labels", rec.labels)]["labels"])
        assert reader_store.gc() == []  # gc of leftovers leaves the writer's work in progress alone
        reads += 1
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "computed 4" in out, out + err
    assert_no_traceback(out, err)
    after = view_entries(Store(path, create=False))
    assert len(after) == 7 and all(after[rec] == keys for rec, keys in before.items())
    assert Store(path, create=False).verify().ok
    assert reads >= 3 and 7 in views_seen


# ------------------------------------------------------------------------- gc vs a write in progress

SPEC = ArraySpec(columns=4, dtype="float32", chunk_frames=16, codec=default_codec())


def _write_in_background(store: Store, key: str, data: np.ndarray, inside: threading.Event, go: threading.Event,
                         outcome: dict) -> threading.Thread:
    def run() -> None:
        try:
            with store.write("features", key, {"frames": len(data)}) as writer:
                writer.create("feats", SPEC)
                writer.append("feats", data[:20])
                inside.set()
                assert go.wait(30)
                writer.append("feats", data[20:])
            outcome["ok"] = True
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    assert inside.wait(30)
    return thread


def test_gc_leaves_a_write_in_progress_alone_and_verify_still_reports_it(tmp_path):
    store = Store(tmp_path / "store")
    key, data = content_key("in-progress"), np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    inside, go, outcome = threading.Event(), threading.Event(), {}
    thread = _write_in_background(store, key, data, inside, go, outcome)
    problems = store.verify().problems
    assert len(problems) == 1 and "orphan of an interrupted write" in problems[0][1]  # still reported
    assert store.gc() == [] and store.gc(keep=set()) == []  # ... but young: maybe a write in progress
    go.set()
    thread.join(30)
    assert outcome == {"ok": True}
    np.testing.assert_array_equal(store.open("features", key)["feats"][:], data)
    assert store.verify().ok


def test_forced_gc_during_a_write_never_yields_a_broken_committed_entry(tmp_path):
    store = Store(tmp_path / "store")
    key, data = content_key("forced"), np.random.default_rng(1).standard_normal((50, 4)).astype(np.float32)
    inside, go, outcome = threading.Event(), threading.Event(), {}
    thread = _write_in_background(store, key, data, inside, go, outcome)
    assert len(store.gc(min_age_s=0)) == 1  # `store gc --all`: the user said no one else is writing
    go.set()
    thread.join(30)
    assert isinstance(outcome.get("error"), Exception), outcome  # the write fails (how depends on timing) ...
    assert not store.has("features", key)  # nothing committed over missing data
    assert store.gc(min_age_s=0) is not None and store.verify().ok


@pytest.mark.parametrize("age_s, removed", [(10.0, 0), (7200.0, 1)])
def test_gc_removes_temporary_files_by_age(tmp_path, age_s, removed):
    store = Store(tmp_path / "store")
    orphan = Path(store.root) / "_tmp" / f"features-{content_key('old')}-cafebabe"
    (orphan / "feats").mkdir(parents=True)
    (orphan / "feats" / "zarr.json").write_text("{}")
    view_tmp = Path(store.root) / "views" / "default.json.deadbeef.tmp"
    view_tmp.parent.mkdir()
    view_tmp.write_text("{")
    then = time.time() - age_s
    for p in (orphan / "feats" / "zarr.json", orphan / "feats", orphan, view_tmp):
        os.utime(p, (then, then))
    assert len(store.verify().problems) == 2
    assert len(store.gc()) == 2 * removed
    assert len(store.verify().problems) == 2 - 2 * removed


def test_gc_while_features_run_keeps_the_entries_the_run_has_not_yet_named_in_a_view(tmp_path, monkeypatch):
    import agencerdas.pipeline.runner as runner
    from agencerdas.stores import referenced_keys

    audio, rttm = make_corpus(tmp_path / "corpus", n=3, seconds=4.0)
    path = tmp_path / "store"
    assert build_features(FeaturesRequest(audio, str(path), rttm_dir=rttm, view="old", progress=False)).ok
    more, more_rttm = make_corpus(tmp_path / "more", n=5, seconds=4.0)
    for i in (3, 4):
        shutil.copy(next(more.glob(f"rec{i:02d}.*")), audio)
        shutil.copy(more_rttm / f"rec{i:02d}.rttm", rttm)
    save_view, collected = runner.save_view, []

    def gc_then_save(store, view):  # `store gc` in another shell: the new entries are committed, not yet named
        other = Store(path, create=False)
        collected.extend(other.gc(keep=referenced_keys(other)))
        save_view(store, view)

    monkeypatch.setattr(runner, "save_view", gc_then_save)
    summary = build_features(FeaturesRequest(audio, str(path), rttm_dir=rttm, view="new", progress=False))
    assert summary.ok and summary.computed == 2 and collected == []
    store = Store(path, create=False)
    for rec in load_view(store, "new").recordings.values():
        assert store.has("features", rec.features) and store.has("labels", rec.labels)
    assert store.verify().ok


def test_entries_a_forced_gc_removes_before_the_view_names_them_are_reported_and_rebuilt(tmp_path, monkeypatch):
    import agencerdas.pipeline.runner as runner
    from agencerdas.stores import referenced_keys

    audio, rttm = make_corpus(tmp_path / "corpus", n=3, seconds=4.0)
    path = tmp_path / "store"
    assert build_features(FeaturesRequest(audio, str(path), rttm_dir=rttm, view="old", progress=False)).ok
    (path / "views" / "old.json").unlink()  # its entries are now unreferenced, as after a view was dropped
    save_view = runner.save_view

    def forced_gc_then_save(store, view):  # `store gc --all` elsewhere, after this run planned to reuse them
        other = Store(path, create=False)
        assert len(other.gc(keep=referenced_keys(other), min_age_s=0)) == 6
        save_view(store, view)

    monkeypatch.setattr(runner, "save_view", forced_gc_then_save)
    summary = build_features(FeaturesRequest(audio, str(path), rttm_dir=rttm, view="new", progress=False))
    assert summary.reused == 3 and not summary.ok
    assert sorted(Path(p).name for p, _ in summary.failures) == sorted(p.name for p in audio.iterdir())
    assert all("concurrent `store gc`" in reason for _, reason in summary.failures)
    monkeypatch.undo()
    again = build_features(FeaturesRequest(audio, str(path), rttm_dir=rttm, view="new", progress=False))
    assert again.ok and again.computed == 3
    store = Store(path, create=False)
    assert all(store.has("features", r.features) for r in load_view(store, "new").recordings.values())
