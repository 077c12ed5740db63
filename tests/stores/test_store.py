"""The entry store: atomic commits, leftovers of crashes, verify, gc, concurrency and store markers."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from agencerdas.stores import ArraySpec, DatasetView, Store, ViewRecording, content_key, referenced_keys, save_view
from agencerdas.stores.errors import AgencerdasError
from agencerdas.stores.store import STORE_VERSION
from agencerdas.stores import default_codec

SPEC = ArraySpec(columns=4, dtype="float32", chunk_frames=16, codec=default_codec())


def key(name: str) -> str:
    return content_key("test-entry", name)


def data(rows: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 4)).astype(np.float32)


def put(store: Store, kind: str, k: str, array: np.ndarray | None = None, name: str = "feats") -> np.ndarray:
    array = data() if array is None else array
    with store.write(kind, k, {"frames": len(array)}) as writer:
        writer.create(name, SPEC)
        writer.append(name, array[:20])
        writer.append(name, array[20:])
    return array


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "store")


def test_write_then_read_back(store):
    k = key("a")
    array = put(store, "features", k)
    assert store.has("features", k)
    assert store.keys("features") == [k]
    assert store.keys("labels") == []
    np.testing.assert_array_equal(store.open("features", k)["feats"][:], array)
    assert store.attrs("features", k)["frames"] == 50
    report = store.verify()
    assert report.ok and report.checked == 1


def test_exception_inside_write_leaves_no_entry(store):
    k = key("a")
    with pytest.raises(RuntimeError, match="boom"):
        with store.write("features", k, {}) as writer:
            writer.create("feats", SPEC)
            writer.append("feats", data())
            raise RuntimeError("boom")
    assert not store.has("features", k)
    assert store.keys("features") == []
    with pytest.raises(AgencerdasError, match="no features entry"):
        store.open("features", k)
    report = store.verify()
    assert report.ok and report.checked == 0  # the aborted write left nothing behind
    assert store.gc(dry_run=True) == []


def crash_leftovers(store: Store) -> tuple[str, str]:
    """Leave what crashed writers leave: a finished-looking group in _tmp/ and a group without commit.json."""
    committed = key("committed")
    put(store, "features", committed)
    entry = Path(store._path("features", committed))
    orphan = Path(store.root) / "_tmp" / f"features-{key('orphan')}-deadbeef"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    os.system(f"cp -r '{entry}' '{orphan}'")  # what a writer killed just before its rename leaves
    assert (orphan / "commit.json").exists()
    partial = Path(store._path("features", key("partial")))
    os.system(f"cp -r '{entry}' '{partial}'")
    (partial / "commit.json").unlink()  # e.g. an interrupted copy or gc of the entry
    return str(orphan), str(partial)


def test_crash_leftovers_are_reported_untrusted_and_collected(store):
    orphan, partial = crash_leftovers(store)
    committed = key("committed")

    assert not store.has("features", key("orphan"))
    assert not store.has("features", key("partial"))
    with pytest.raises(AgencerdasError):
        store.open("features", key("partial"))
    assert store.keys("features") == [committed]

    report = store.verify()
    assert not report.ok and report.checked == 1
    problems = dict(report.problems)
    assert set(problems) == {orphan, partial}
    assert "interrupted write" in problems[orphan]
    assert "without commit marker" in problems[partial]

    assert store.gc(dry_run=True) == [partial]  # a fresh _tmp orphan may be a write in progress
    assert sorted(store.gc(dry_run=True, min_age_s=0)) == sorted([orphan, partial])
    assert os.path.exists(orphan) and os.path.exists(partial)  # dry run removes nothing

    assert sorted(store.gc(min_age_s=0)) == sorted([orphan, partial])
    assert not os.path.exists(orphan) and not os.path.exists(partial)
    assert store.has("features", committed)
    report = store.verify()
    assert report.ok and report.checked == 1


def test_entry_can_be_written_over_a_partial_leftover(store):
    orphan, _ = crash_leftovers(store)
    k = key("partial")
    array = put(store, "features", k, data(seed=7))
    assert store.has("features", k)
    np.testing.assert_array_equal(store.open("features", k)["feats"][:], array)
    report = store.verify()
    assert report.checked == 2 and [path for path, _ in report.problems] == [orphan]


def test_verify_detects_a_changed_chunk(store):
    k = key("a")
    put(store, "features", k)
    assert store.verify().ok
    chunk = Path(store._path("features", k)) / "feats" / "c" / "1" / "0"
    assert chunk.is_file()
    # Replace chunk 1 with a valid chunk of other data (same codec), as silent corruption would.
    other = Store(Path(store.root).parent / "other")
    put(other, "features", k, data(seed=99))
    chunk.write_bytes((Path(other._path("features", k)) / "feats" / "c" / "1" / "0").read_bytes())

    report = store.verify()
    assert not report.ok
    [(path, reason)] = report.problems
    assert path.endswith(f"{k}/feats") and "checksum mismatch" in reason
    assert store.verify(checksums=False).ok  # the fast check only compares shapes and dtypes


def test_verify_reports_an_unreadable_chunk(store):
    k = key("a")
    put(store, "features", k)
    chunk = Path(store._path("features", k)) / "feats" / "c" / "0" / "0"
    chunk.write_bytes(b"garbage")
    report = store.verify()
    assert not report.ok
    assert any(k in path for path, _ in report.problems)


def test_concurrent_writers_of_one_key_both_succeed(store):
    k = key("same")
    array = data()
    inside = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with store.write("features", k, {}) as w:
                w.create("feats", SPEC)
                w.append("feats", array)
                inside.wait()  # both are mid-write before either commits
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.keys("features") == [k]
    np.testing.assert_array_equal(store.open("features", k)["feats"][:], array)
    report = store.verify()
    assert report.ok and report.checked == 1  # the loser's temporary copy is gone too


def test_store_path_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "store"
    path.write_text("not a store")
    with pytest.raises(AgencerdasError, match="is a file"):
        Store(path)


def test_non_empty_directory_without_marker_is_refused(tmp_path):
    (tmp_path / "something.txt").write_text("x")
    with pytest.raises(AgencerdasError, match="non-empty directory"):
        Store(tmp_path)


def test_missing_store_is_not_created_when_reading(tmp_path):
    with pytest.raises(AgencerdasError, match="no agencerdas store"):
        Store(tmp_path / "nothing", create=False)
    assert not (tmp_path / "nothing").exists()


def test_newer_store_version_is_refused(tmp_path):
    Store(tmp_path / "store")
    marker = tmp_path / "store" / "store.json"
    info = json.loads(marker.read_text())
    marker.write_text(json.dumps({**info, "version": STORE_VERSION + 1}))
    with pytest.raises(AgencerdasError, match=r"newer than this agencerdas understands.*upgrade agencerdas"):
        Store(tmp_path / "store")


def test_damaged_or_foreign_marker_is_a_clear_error(tmp_path):
    Store(tmp_path / "store")
    marker = tmp_path / "store" / "store.json"
    marker.write_text(json.dumps({"format": "something-else", "version": 1}))
    with pytest.raises(AgencerdasError, match="not an agencerdas store"):
        Store(tmp_path / "store")
    marker.write_text('{"format": "agencer')  # a truncated write
    with pytest.raises(AgencerdasError, match="store.json"):
        Store(tmp_path / "store")


@pytest.mark.filterwarnings("error")  # e.g. zarr's warning about a non-async filesystem wrapper
def test_memory_store_end_to_end():
    store = Store(f"memory://agencerdas-test-{uuid.uuid4().hex}")
    assert not store.local
    k = key("a")
    array = put(store, "features", k)
    assert store.has("features", k) and store.keys("features") == [k]
    np.testing.assert_array_equal(store.open("features", k)["feats"][:], array)
    report = store.verify()
    assert report.ok and report.checked == 1

    # A killed in-place write (its context never exits) is invisible, reported by verify and collected by gc.
    aborted = key("aborted")
    killed = store.write("features", aborted, {})
    writer = killed.__enter__()
    writer.create("feats", SPEC)
    writer.append("feats", array)
    assert not store.has("features", aborted) and store.keys("features") == [k]
    report = store.verify()
    assert [path for path, _ in report.problems] == [store._path("features", aborted)]
    assert store.gc() == []  # written in place: a fresh one may be a write in progress elsewhere
    assert store.gc(dry_run=True, min_age_s=0) == [store._path("features", aborted)]
    assert store.gc(min_age_s=0) == [store._path("features", aborted)]
    assert store.verify().ok

    # Views and gc work the same way on object storage.
    put(store, "labels", key("labels"), name="labels")
    put(store, "labels", key("unreferenced"), name="labels")
    save_view(store, view_of({"r": ViewRecording(k, key("labels"), 50, 0.5)}))
    assert store.view_names() == ["default"]
    assert store.gc(keep=referenced_keys(store)) == []  # young: maybe a features run about to write its view
    assert store.gc(keep=referenced_keys(store), min_age_s=0) == [store._path("labels", key("unreferenced"))]
    assert Store(store.url, create=False).keys("labels") == [key("labels")]


def view_of(recordings: dict[str, ViewRecording], name: str = "default") -> DatasetView:
    return DatasetView(name=name, recordings=recordings, feature_config={}, label_config={})


def test_gc_with_views_keeps_referenced_entries(store):
    kept_f, kept_l, other_f, other_l, shared = (key(n) for n in ("kf", "kl", "of", "ol", "shared"))
    for k in (kept_f, other_f, shared):
        put(store, "features", k)
    for k in (kept_l, other_l):
        put(store, "labels", k, name="labels")
    save_view(store, view_of({"a": ViewRecording(kept_f, kept_l, 50, 0.5), "b": ViewRecording(shared, None, 50, 0.5)}))
    save_view(store, view_of({"c": ViewRecording(shared, None, 50, 0.5)}, name="second"))

    keep = referenced_keys(store)
    assert keep == {kept_f, kept_l, shared}
    doomed = sorted([store._path("features", other_f), store._path("labels", other_l)])
    assert store.gc(keep=keep) == []  # committed just now: a features run may not have written its view yet
    assert sorted(store.gc(keep=keep, dry_run=True, min_age_s=0)) == doomed
    assert set(store.keys("features")) == {kept_f, other_f, shared}
    hour_ago = time.time() - 3600.5
    for path in doomed:
        os.utime(f"{path}/commit.json", (hour_ago, hour_ago))
    assert sorted(store.gc(keep=keep)) == doomed  # unreferenced for longer than the grace period
    assert store.keys("features") == sorted([kept_f, shared])
    assert store.keys("labels") == [kept_l]
    assert store.view_names() == ["default", "second"]
    assert store.verify().ok


def test_keys_must_be_hex(store):
    with pytest.raises(AgencerdasError, match="not a content key"):
        store.has("features", "../escape")


def test_a_write_that_commits_while_gc_scans_is_neither_reported_nor_harmed(store, monkeypatch):
    k = key("racing")
    expected = data()
    writing = store.write("features", k, {"frames": len(expected)})
    writer = writing.__enter__()
    writer.create("feats", SPEC)
    writer.append("feats", expected)
    scan = Store._leftovers

    def scan_then_commit(self):
        found = scan(self)  # gc lists the writer's _tmp/ directory ...
        writing.__exit__(None, None, None)  # ... which is renamed into place before gc looks at its age
        return found

    monkeypatch.setattr(Store, "_leftovers", scan_then_commit)
    assert store.gc() == []
    monkeypatch.undo()
    np.testing.assert_array_equal(store.open("features", k)["feats"][:], expected)
    assert store.verify().ok


def test_object_store_entries_of_layout_1_still_read_and_writing_raises_the_layout(tmp_path):
    url = f"memory://agencerdas-test-{uuid.uuid4().hex}"
    store = Store(url)
    k = key("old")
    array = put(store, "features", k)
    # Rewrite the entry as layout 1 wrote it: arrays in the entry folder, commit.json without "data".
    entry = store._path("features", k)
    commit = json.loads(store.fs.cat_file(f"{entry}/commit.json"))
    generation = f"{entry}/{commit.pop('data')}"
    for path in store.fs.find(generation):
        store.fs.pipe_file(entry + path[len(generation):], store.fs.cat_file(path))
    store.fs.rm(generation, recursive=True)
    store.fs.pipe_file(f"{entry}/commit.json", json.dumps(commit).encode())
    store.fs.pipe_file(f"{store.root}/store.json", json.dumps({"format": "agencerdas-store", "version": 1}).encode())

    old = Store(url, create=False)
    assert old.version == 1
    np.testing.assert_array_equal(old.open("features", k)["feats"][:], array)
    assert old.verify().ok and old.gc(min_age_s=0) == []
    put(old, "features", key("new"))  # the first generation write marks the store as layout 2
    assert json.loads(old.fs.cat_file(f"{old.root}/store.json"))["version"] == STORE_VERSION == 2
    assert Store(url, create=False).verify().ok
    assert Store(tmp_path / "local").version == 1  # local stores are unchanged: older readers keep them
