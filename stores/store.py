"""The content-addressed entry store: Zarr v3 groups on a local path or any fsspec URL.

Layout under the store root::

    store.json                    format marker and version
    features/<key>/               one Zarr group per features entry
    labels/<key>/                 one Zarr group per labels entry
        zarr.json, <array>/...    the arrays and their attributes (on object storage:
                                  in a generation folder g<id>/ that commit.json names)
        commit.json               written last: shapes, dtypes and xxh3 checksums
    views/<name>.json             dataset views (which entries form a training set)
    _tmp/                         entries being written on a local filesystem

An entry exists for readers only when its ``commit.json`` exists. On a local
filesystem the whole group is written under ``_tmp/`` and renamed into place, so
a crash leaves at most an orphan in ``_tmp/``; on object storage, where rename is
not atomic, each writer writes its own generation inside the entry and the marker,
naming it, is the last object written (and the first one deleted), so concurrent
writers of one key never mix their objects. ``verify`` reports every kind of
leftover; ``gc`` removes them.

Local commits are also durable against power loss (:mod:`.durable`): every file and
directory of an entry is fsynced before the rename and its new parent directory after
it; views and ``store.json`` are fsynced before and after they are put in place.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager, suppress
from functools import partial
from typing import Any, Callable, Iterator

import fsspec
import zarr
from fsspec.implementations.local import LocalFileSystem

from .arrays import EntryWriter, zarr_store
from .durable import fsync_dir, fsync_tree, make_dirs, write_file
from .errors import AgencerdasError
from .generations import commit_generation, data_path, discard, new_generation, raise_layout
from .layout import (COMMIT, KINDS, LOCAL_VERSION, MARKER_TMP, STORE_FORMAT, STORE_VERSION, committed_names,
                     is_entry_name, is_marker_tmp, is_plain_name)
from .maintenance import Maintenance
from .options import check_no_credentials

# Re-exported: the layout names callers and tests import from here.
__all__ = ["COMMIT", "KINDS", "STORE_VERSION", "Store"]


class Store(Maintenance):
    """A feature store at ``url`` (local directory or fsspec URL such as ``s3://b/p``, ``memory://x``).

    ``durable`` (local stores; default on): fsync every commit so that a power cut never
    exposes a half-written entry, view or marker. Off only to measure what it costs
    (``bench``); a crash of the process alone is safe either way.
    """

    def __init__(self, url: str | os.PathLike, storage_options: dict | None = None, create: bool = True,
                 durable: bool = True):
        self.url = str(url)
        self.durable = durable
        self.storage_options = dict(storage_options or {})
        check_no_credentials(self.storage_options)
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        except (ImportError, ValueError) as exc:
            raise AgencerdasError(f"cannot open store {self.url!r}: {exc}") from None
        self.root = self.root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        try:
            self._open_or_create(create)
        except AgencerdasError:
            raise
        except Exception as exc:  # the backend's own types: no credentials, endpoint unreachable, access denied
            protocols = {self.fs.protocol} if isinstance(self.fs.protocol, str) else set(self.fs.protocol)
            hint = (" (credentials come from the environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE "
                    "or ~/.aws; the endpoint from --storage-option endpoint_url=URL or AWS_ENDPOINT_URL)"
                    if "s3" in protocols else "")
            raise AgencerdasError(f"cannot open store {self.url}: {type(exc).__name__}: {exc}{hint}") from exc

    def _open_or_create(self, create: bool) -> None:
        marker = f"{self.root}/store.json"
        if self.local and os.path.exists(self.root) and not os.path.isdir(self.root):
            raise AgencerdasError(f"store path {self.url} is a file; give a directory (new or existing store)")
        if self.fs.exists(marker):
            try:
                info = json.loads(self.fs.cat_file(marker))
            except ValueError as exc:
                raise AgencerdasError(f"{self.url}: store.json is damaged ({exc}); restore it or use a new store") from None
            info = info if isinstance(info, dict) else {}
            if info.get("format") != STORE_FORMAT:
                raise AgencerdasError(f"{self.url} is not an agencerdas store (store.json format {info.get('format')!r})")
            version = info.get("version", 0)
            if not isinstance(version, int) or version > STORE_VERSION:
                raise AgencerdasError(
                    f"store {self.url} has layout version {version!r}, newer than this agencerdas "
                    f"understands ({STORE_VERSION}); upgrade agencerdas to read it"
                )
            self.version = version
            return
        if not create:
            raise AgencerdasError(f"no agencerdas store at {self.url}; run `agencerdas features` to build one")
        if [p for p in self._listing(self.root) if not is_marker_tmp(p)]:
            if self.exists(marker):  # another process created the store meanwhile
                return self._open_or_create(create=False)
            raise AgencerdasError(
                f"{self.url} is a non-empty directory without store.json; choose an empty or new directory for the store"
            )
        try:
            if self.local:
                make_dirs(self.root, self.durable)
            else:
                self.fs.makedirs(self.root, exist_ok=True)
            payload = json.dumps({"format": STORE_FORMAT,
                                  "version": LOCAL_VERSION if self.local else STORE_VERSION}).encode()
            if self.local:
                # Written aside and linked into place: a crash never leaves half a marker, and of two
                # processes creating one store the first wins and the second reads its marker.
                tmp = f"{self.root}/{MARKER_TMP}{uuid.uuid4().hex[:8]}.tmp"
                try:
                    write_file(tmp, payload, self.durable)
                    try:
                        os.link(tmp, marker)
                    except FileExistsError:
                        pass
                    except OSError:  # no hard links on this filesystem: an atomic replace, same bytes
                        os.replace(tmp, marker)
                    if self.durable:
                        fsync_dir(self.root)
                finally:
                    with suppress(OSError):
                        os.unlink(tmp)
            else:
                self.fs.pipe_file(marker, payload)
        except OSError as exc:
            raise AgencerdasError(f"cannot create store at {self.url}: {exc}") from None
        self._open_or_create(create=False)

    # ----------------------------------------------------------------- entries

    def _path(self, kind: str, key: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown entry kind {kind!r}")
        if not isinstance(key, str) or not is_entry_name(key):
            raise AgencerdasError(f"{key!r} is not a content key (expected 32 lowercase hex digits)")
        return f"{self.root}/{kind}/{key}"

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists in storage now.

        Other processes write the same store, so listings that the filesystem cached
        (s3fs, gcsfs keep them) are dropped first: they would hide their new objects.
        """
        self.fs.invalidate_cache(path)
        return self.fs.exists(path)

    def _listing(self, path: str) -> list[str]:
        """Full paths directly under ``path`` as storage has them now, [] when it does not exist."""
        self.fs.invalidate_cache(path)
        try:
            return sorted(p.rstrip("/") for p in self.fs.ls(path, detail=False))
        except FileNotFoundError:
            return []

    def _remove(self, path: str) -> None:
        """Delete an entry (or leftover) so no reader ever sees a marker over missing data: marker first."""
        if self.exists(f"{path}/{COMMIT}"):
            self.fs.rm(f"{path}/{COMMIT}")
        self.fs.rm(path, recursive=True)

    def has(self, kind: str, key: str) -> bool:
        """Whether a committed entry ``kind/key`` exists (uncommitted leftovers do not count)."""
        return self.exists(f"{self._path(kind, key)}/{COMMIT}")

    @contextmanager
    def write(self, kind: str, key: str, attrs: dict[str, Any]) -> Iterator[EntryWriter]:
        """Write entry ``kind/key`` atomically; it becomes visible only when the block exits cleanly.

        Usage::

            with store.write("features", key, attrs) as w:
                w.create("feats", spec)
                for block in blocks:
                    w.append("feats", block)

        On a local filesystem the group is written under ``_tmp/``, fsynced and renamed into
        place, and the rename is fsynced (with ``durable``, the default).
        On object storage, where rename is a copy, each writer writes its own generation
        ``<kind>/<key>/g<id>/`` and commits by writing ``commit.json`` that names it, so two
        writers of one new key never touch each other's objects. If another process
        committed the key meanwhile, ours is discarded (keys are content hashes: both are
        the same data).
        """
        final = self._path(kind, key)
        if not self.local and self.version < STORE_VERSION:
            self.version = raise_layout(self.fs, self.root)
        generation = new_generation()
        target = f"{self.root}/_tmp/{kind}-{key}-{generation}" if self.local else f"{final}/{generation}"
        try:
            group = zarr.open_group(store=zarr_store(self.fs, target, read_only=False), mode="w")
            group.update_attributes(attrs)
            writer = EntryWriter(group, f"{kind} entry {key}")
            yield writer
            if not self.exists(f"{target}/zarr.json"):
                raise AgencerdasError(
                    f"the temporary files of {kind} entry {key} vanished while it was written (a concurrent "
                    "`agencerdas store gc --all`?); nothing was committed, rerun to write it"
                )
            commit = {"kind": kind, "key": key, "arrays": writer.manifest(), "committed_at": time.time()}
            if self.local:
                self.fs.pipe_file(f"{target}/{COMMIT}", json.dumps(commit).encode())
                if self.durable:
                    fsync_tree(target)  # the whole entry is on disk before its name can be
            elif not self.has(kind, key):
                commit_generation(self.fs, final, generation, commit)
                return
        except BaseException:
            if self.local:
                shutil.rmtree(target, ignore_errors=True)
            else:
                discard(self.fs, target)
            raise
        if not self.local:  # the key was committed while we wrote: ours is a duplicate
            discard(self.fs, target)
            return
        try:
            make_dirs(os.path.dirname(final), self.durable)
            for attempt in range(2):
                try:
                    os.rename(target, final)
                    break
                except OSError:
                    if self.has(kind, key):
                        shutil.rmtree(target, ignore_errors=True)
                        break
                    if attempt or not os.path.isdir(final):
                        raise
                    # An uncommitted leftover (an interrupted copy or gc) holds the name: replace it.
                    shutil.rmtree(final, ignore_errors=True)
            if self.durable:
                fsync_dir(os.path.dirname(final))  # the rename, ours or a concurrent writer's: the commit point
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)  # e.g. no space for the directory: leave no orphan
            raise

    def _commit(self, path: str) -> dict | None:
        """The commit marker of the entry at ``path``, None when it has none (not committed)."""
        try:
            commit = json.loads(self.fs.cat_file(f"{path}/{COMMIT}"))
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise AgencerdasError(f"{path}/{COMMIT} is damaged ({exc}); remove the entry and rerun features") from None
        data = commit.get("data") if isinstance(commit, dict) else None
        if not isinstance(commit, dict) or (data is not None and not is_plain_name(data)):
            raise AgencerdasError(f"{path}/{COMMIT} is not a commit marker; remove the entry and rerun features")
        return commit

    def _group(self, path: str, commit: dict) -> zarr.Group:
        """The committed arrays at ``path``, read-only: in the generation ``commit`` names
        (object storage) or in ``path`` itself."""
        return zarr.open_group(store=zarr_store(self.fs, data_path(path, commit), read_only=True), mode="r")

    def open(self, kind: str, key: str) -> zarr.Group:
        """The committed entry ``kind/key`` as a read-only Zarr group."""
        path = self._path(kind, key)
        commit = self._commit(path)
        if commit is None:
            raise AgencerdasError(
                f"store {self.url} has no {kind} entry {key}; rebuild it with `agencerdas features`"
            )
        return self._group(path, commit)

    def attrs(self, kind: str, key: str) -> dict[str, Any]:
        """The attributes recorded with a committed entry (config, provenance, sizes)."""
        return self.open(kind, key).attrs.asdict()

    def keys(self, kind: str) -> list[str]:
        """Keys of committed ``kind`` entries, sorted (one listing of the prefix: see :meth:`_scan`)."""
        return committed_names(self._scan(kind))

    def committed(self, kind: str) -> Callable[[str], bool]:
        """``has(key)`` for many keys of ``kind`` at the storage's cheapest.

        On object storage, where every question is a round trip, the answer comes from one
        listing of ``kind/`` taken now (a snapshot: entries committed later read as missing, which
        costs a planner at most a duplicate write that :meth:`write` discards). On a local
        filesystem it is :meth:`has` per key, a stat, whose cost does not grow with the store.
        """
        if self.local:
            return partial(self.has, kind)
        return frozenset(self.keys(kind)).__contains__

    def _scan(self, kind: str) -> dict[str, set[str]]:
        """Every entry folder (or stray object named like one) directly under ``kind/``, mapped to the names
        directly inside it. Names that are not content keys are left out: not ours to report or collect.

        On object storage this is one listing of every object under the prefix (``fs.find``: one
        request per 1,000 objects however many entries there are), never a request per entry; on a
        local filesystem, a directory read of ``kind/`` and of each entry (system calls).
        """
        base = f"{self.root}/{kind}"
        entries: dict[str, set[str]] = {}
        if self.local:
            try:
                names = os.listdir(base)
            except FileNotFoundError:
                return entries
            for name in filter(is_entry_name, names):
                try:
                    entries[name] = set(os.listdir(f"{base}/{name}"))
                except NotADirectoryError:
                    entries[name] = set()  # a stray file: an entry without a marker, as a reader sees it
                except FileNotFoundError:
                    pass  # removed since the listing (a concurrent gc)
            return entries
        self.fs.invalidate_cache(base)
        try:
            # withdirs: an empty folder (filesystems with real directories, e.g. memory://) is an entry too.
            paths = self.fs.find(base, withdirs=True)
        except FileNotFoundError:
            return entries
        for path in paths:
            relative = path.rstrip("/")[len(base) + 1:] if path.startswith(f"{base}/") else ""
            name, _, inside = relative.partition("/")
            if is_entry_name(name):
                children = entries.setdefault(name, set())
                if inside:
                    children.add(inside.split("/", 1)[0])
        return entries

    # ------------------------------------------------------------------- views

    def view_path(self, name: str) -> str:
        if not name or "/" in name or name.startswith(".") or "\\" in name:
            raise AgencerdasError(f"view name {name!r} is not a plain file name")
        return f"{self.root}/views/{name}.json"

    def put_json(self, path: str, payload: dict[str, Any]) -> None:
        """Write JSON at ``path`` in the store so readers never see half a file."""
        data = json.dumps(payload, indent=1, sort_keys=True).encode()
        if self.local:
            make_dirs(os.path.dirname(path), self.durable)
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
            try:
                write_file(tmp, data, self.durable)
                os.replace(tmp, path)
                if self.durable:
                    fsync_dir(os.path.dirname(path))
            except BaseException:
                with suppress(OSError):
                    os.unlink(tmp)  # e.g. disk full: no half-written temporary file stays behind
                raise
        else:
            self.fs.pipe_file(path, data)  # a single object PUT is atomic on object stores

    def get_json(self, path: str) -> dict[str, Any]:
        try:
            payload = json.loads(self.fs.cat_file(path))
        except ValueError as exc:
            raise AgencerdasError(f"{path} is damaged ({exc}); rewrite it (`agencerdas features` rewrites a view)") from None
        if not isinstance(payload, dict):
            raise AgencerdasError(f"{path} is damaged (a JSON object was expected)")
        return payload

    def view_names(self) -> list[str]:
        paths = self._listing(f"{self.root}/views")
        return [p.rsplit("/", 1)[-1][: -len(".json")] for p in paths if p.endswith(".json")]
