"""Power-loss durability of local commits: what is fsynced, and in which order against the rename."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agencerdas.stores import ArraySpec, DatasetView, Store, ViewRecording, content_key, default_codec, save_view

SPEC = ArraySpec(columns=4, dtype="float32", chunk_frames=16, codec=default_codec())

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names fsynced descriptors via /proc")


@pytest.fixture
def events(monkeypatch) -> list[tuple[str, ...]]:
    """Every fsync (by the path its descriptor names), rename, replace and link, in call order."""
    log: list[tuple[str, ...]] = []
    real = {name: getattr(os, name) for name in ("fsync", "rename", "replace", "link")}

    def fsync(fd):
        log.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real["fsync"](fd)

    def move(name):
        def call(src, dst, *args, **kwargs):
            log.append((name, str(src), str(dst)))
            return real[name](src, dst, *args, **kwargs)
        return call

    monkeypatch.setattr(os, "fsync", fsync)
    for name in ("rename", "replace", "link"):
        monkeypatch.setattr(os, name, move(name))
    return log


def put(store: Store, name: str) -> str:
    k = content_key("durable-test", name)
    with store.write("features", k, {}) as writer:
        writer.create("feats", SPEC)
        writer.append("feats", [[1.0, 2.0, 3.0, 4.0]] * 40)  # 3 chunks: several files in nested folders
    return k


def fsynced(events: list[tuple[str, ...]]) -> set[str]:
    return {e[1] for e in events if e[0] == "fsync"}


def test_entry_files_and_directories_are_fsynced_before_the_rename_and_the_parent_after(tmp_path, events):
    store = Store(tmp_path / "store")
    events.clear()
    k = put(store, "a")
    final = Path(store._path("features", k))
    (rename,) = [i for i, e in enumerate(events) if e[0] == "rename"]
    src = events[rename][1]
    assert events[rename][2] == str(final)
    inside = {src}  # every file and directory of the committed entry, by the name it had before the rename
    for directory, dirs, files in os.walk(final):
        rel = os.path.relpath(directory, final)
        inside |= {os.path.normpath(os.path.join(src, rel, name)) for name in dirs + files + ["."]}
    assert len(inside) > 6 and os.path.join(src, "commit.json") in inside
    assert inside <= fsynced(events[:rename])
    after = fsynced(events[rename + 1:])
    assert str(final.parent) in after  # features/: the rename itself
    assert str(final.parent.parent) in fsynced(events[:rename])  # features/ was new: its entry in the root too


def test_put_json_fsyncs_the_file_before_replace_and_the_directory_after(tmp_path, events):
    store = Store(tmp_path / "store")
    events.clear()
    path = save_view(store, DatasetView("v", {"r": ViewRecording(content_key("x", 1), None, 1, 0.01)}, {}, {}))
    (replace,) = [i for i, e in enumerate(events) if e[0] == "replace"]
    tmp = events[replace][1]
    assert events[replace][2] == path and tmp.startswith(path)
    assert tmp in fsynced(events[:replace])
    assert os.path.dirname(path) in fsynced(events[replace + 1:])


def test_store_marker_is_fsynced_before_it_is_linked_and_the_root_after(tmp_path, events):
    root = tmp_path / "new" / "store"
    Store(root)
    (link,) = [i for i, e in enumerate(events) if e[0] == "link"]
    tmp, marker = events[link][1:]
    assert marker == str(root / "store.json")
    assert tmp in fsynced(events[:link])
    assert {str(tmp_path), str(tmp_path / "new")} <= fsynced(events[:link])  # the new directories' entries
    assert str(root) in fsynced(events[link + 1:])


def test_durable_off_fsyncs_nothing_and_writes_the_same_entry(tmp_path, events):
    fast = Store(tmp_path / "fast", durable=False)
    k = put(fast, "a")
    save_view(fast, DatasetView("v", {"r": ViewRecording(k, None, 40, 0.4)}, {}, {}))
    assert fsynced(events) == set()
    assert fast.has("features", k) and fast.verify().ok
