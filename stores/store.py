"""The content-addressed entry store: Zarr v3 groups on a local path or any fsspec URL.

Layout under the store root::

    store.json                    format marker and version
    features/<key>/               one Zarr group per features entry
    labels/<key>/                 one Zarr group per labels entry
        zarr.json, <array>/...    the arrays and their attributes
        commit.json               written last: shapes, dtypes and xxh3 checksums
    views/<name>.json             dataset views (which entries form a training set)
    _tmp/                         entries being written on a local filesystem

An entry exists for readers only when its ``commit.json`` exists. On a local
filesystem the whole group is written under ``_tmp/`` and renamed into place, so
a crash leaves at most an orphan in ``_tmp/``; on object storage, where rename is
not atomic, the group is written in place and the marker is the last object
written. ``verify`` reports both kinds of leftovers; ``gc`` removes them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import fsspec
import numpy as np
import xxhash
import zarr
from fsspec.implementations.local import LocalFileSystem

from .errors import AgencerdasError

KINDS = ("features", "labels")
COMMIT = "commit.json"
STORE_FORMAT = "agencerdas-store"
#: Layout version of the store; a reader refuses a store written by a newer one.
STORE_VERSION = 1


@dataclass(frozen=True)
class ArraySpec:
    """How one time-major array of an entry is laid out: rows are frames."""

    columns: int
    dtype: str
    chunk_frames: int
    codec: Any  # a zarr.codecs.* codec, or None for uncompressed


def zarr_store(fs: fsspec.AbstractFileSystem, path: str, read_only: bool) -> zarr.abc.store.Store:
    """A Zarr store object for ``path`` on ``fs`` (a plain LocalStore on local disk, faster than fsspec)."""
    if isinstance(fs, LocalFileSystem):
        return zarr.storage.LocalStore(path, read_only=read_only)
    if not fs.async_impl:
        from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

        fs = AsyncFileSystemWrapper(fs, asynchronous=True)
    return zarr.storage.FsspecStore(fs, path=path, read_only=read_only)


def default_codec() -> Any:
    """The compressor for new arrays, chosen by measurement (README, "Store")."""
    return zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


class EntryWriter:
    """Streams time blocks into the arrays of one entry while checksumming them."""

    def __init__(self, group: zarr.Group):
        self._group = group
        self._digests: dict[str, Any] = {}

    def create(self, name: str, spec: ArraySpec) -> None:
        """Create an empty array ``name`` of shape (0, spec.columns), chunked along time."""
        self._group.create_array(
            name,
            shape=(0, spec.columns),
            chunks=(spec.chunk_frames, spec.columns),
            dtype=spec.dtype,
            compressors=spec.codec,
            fill_value=0,
        )
        self._digests[name] = xxhash.xxh3_128()

    def append(self, name: str, block: np.ndarray) -> None:
        """Append rows (frames, columns) to array ``name``; converted to the array's dtype."""
        array = self._group[name]
        block = np.ascontiguousarray(block, dtype=array.dtype)
        if block.ndim != 2 or block.shape[1] != array.shape[1]:
            raise ValueError(f"block of shape {block.shape} does not fit array {name} {array.shape}")
        if len(block):
            array.append(block, axis=0)
            self._digests[name].update(block.tobytes())

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        """Add attributes known only after the arrays are written (e.g. the frame count)."""
        self._group.attrs.update(attrs)

    def manifest(self) -> dict[str, dict[str, Any]]:
        """Shape, dtype and content checksum of every array written so far."""
        return {
            name: {
                "shape": list(self._group[name].shape),
                "dtype": str(self._group[name].dtype),
                "xxh3": digest.hexdigest(),
            }
            for name, digest in self._digests.items()
        }


@dataclass
class VerifyReport:
    """What ``Store.verify`` found: committed entries checked and every problem by path."""

    checked: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def ok(self) -> bool:
        return not self.problems


class Store:
    """A feature store at ``url`` (local directory or fsspec URL such as ``s3://b/p``, ``memory://x``)."""

    def __init__(self, url: str | os.PathLike, storage_options: dict | None = None, create: bool = True):
        self.url = str(url)
        self.storage_options = dict(storage_options or {})
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        except (ImportError, ValueError) as exc:
            raise AgencerdasError(f"cannot open store {self.url!r}: {exc}") from None
        self.root = self.root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        self._open_or_create(create)

    def _open_or_create(self, create: bool) -> None:
        marker = f"{self.root}/store.json"
        if self.local and os.path.exists(self.root) and not os.path.isdir(self.root):
            raise AgencerdasError(f"store path {self.url} is a file; give a directory (new or existing store)")
        if self.fs.exists(marker):
            try:
                info = json.loads(self.fs.cat_file(marker))
            except ValueError as exc:
                raise AgencerdasError(f"{self.url}: store.json is damaged ({exc}); restore it or use a new store") from None
            if info.get("format") != STORE_FORMAT:
                raise AgencerdasError(f"{self.url} is not an agencerdas store (store.json format {info.get('format')!r})")
            if int(info.get("version", 0)) > STORE_VERSION:
                raise AgencerdasError(
                    f"store {self.url} has layout version {info['version']}, newer than this agencerdas "
                    f"understands ({STORE_VERSION}); upgrade agencerdas to read it"
                )
            return
        if not create:
            raise AgencerdasError(f"no agencerdas store at {self.url}; run `agencerdas features` to build one")
        if self.local and os.path.isdir(self.root) and os.listdir(self.root):
            raise AgencerdasError(
                f"{self.url} is a non-empty directory without store.json; choose an empty or new directory for the store"
            )
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            self.fs.pipe_file(marker, json.dumps({"format": STORE_FORMAT, "version": STORE_VERSION}).encode())
        except OSError as exc:
            raise AgencerdasError(f"cannot create store at {self.url}: {exc}") from None

    # ----------------------------------------------------------------- entries

    def _path(self, kind: str, key: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown entry kind {kind!r}")
        if not key or not all(c in "0123456789abcdef" for c in key):
            raise AgencerdasError(f"{key!r} is not a content key (expected lowercase hex)")
        return f"{self.root}/{kind}/{key}"

    def has(self, kind: str, key: str) -> bool:
        """Whether a committed entry ``kind/key`` exists (uncommitted leftovers do not count)."""
        return self.fs.exists(f"{self._path(kind, key)}/{COMMIT}")

    @contextmanager
    def write(self, kind: str, key: str, attrs: dict[str, Any]) -> Iterator[EntryWriter]:
        """Write entry ``kind/key`` atomically; it becomes visible only when the block exits cleanly.

        Usage::

            with store.write("features", key, attrs) as w:
                w.create("feats", spec)
                for block in blocks:
                    w.append("feats", block)

        If another process committed the same key meanwhile, ours is discarded
        (keys are content hashes, so both are identical).
        """
        final = self._path(kind, key)
        target = f"{self.root}/_tmp/{kind}-{key}-{uuid.uuid4().hex[:8]}" if self.local else final
        if not self.local and self.fs.exists(final):
            self.fs.rm(final, recursive=True)  # an uncommitted leftover of a crashed writer
        try:
            group = zarr.open_group(store=zarr_store(self.fs, target, read_only=False), mode="w")
            group.attrs.update(attrs)
            writer = EntryWriter(group)
            yield writer
            commit = {"kind": kind, "key": key, "arrays": writer.manifest(), "committed_at": time.time()}
            self.fs.pipe_file(f"{target}/{COMMIT}", json.dumps(commit).encode())
        except BaseException:
            if self.local:
                shutil.rmtree(target, ignore_errors=True)
            raise
        if self.local:
            os.makedirs(os.path.dirname(final), exist_ok=True)
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

    def open(self, kind: str, key: str) -> zarr.Group:
        """The committed entry ``kind/key`` as a read-only Zarr group."""
        if not self.has(kind, key):
            raise AgencerdasError(
                f"store {self.url} has no {kind} entry {key}; rebuild it with `agencerdas features`"
            )
        return zarr.open_group(store=zarr_store(self.fs, self._path(kind, key), read_only=True), mode="r")

    def attrs(self, kind: str, key: str) -> dict[str, Any]:
        """The attributes recorded with a committed entry (config, provenance, sizes)."""
        return self.open(kind, key).attrs.asdict()

    def keys(self, kind: str) -> list[str]:
        """Keys of committed ``kind`` entries, sorted."""
        base = f"{self.root}/{kind}"
        if not self.fs.exists(base):
            return []
        names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False))
        return [name for name in names if self.fs.exists(f"{base}/{name}/{COMMIT}")]

    def _leftovers(self) -> list[tuple[str, str]]:
        """Paths that no reader trusts: ``_tmp`` orphans and groups without a commit marker."""
        found = []
        tmp = f"{self.root}/_tmp"
        if self.fs.exists(tmp):
            found += [(p, "orphan of an interrupted write") for p in self.fs.ls(tmp, detail=False)]
        for kind in KINDS:
            base = f"{self.root}/{kind}"
            if self.fs.exists(base):
                for path in self.fs.ls(base, detail=False):
                    if not self.fs.exists(f"{path.rstrip('/')}/{COMMIT}"):
                        found.append((path, "partial entry without commit marker"))
        return found

    def verify(self, checksums: bool = True) -> VerifyReport:
        """Check every committed entry against its commit manifest and list leftovers.

        With ``checksums``, every array is read back in chunk-sized blocks and its
        xxh3 compared with the one recorded at commit time.
        """
        report = VerifyReport(problems=self._leftovers())
        for kind in KINDS:
            for key in self.keys(kind):
                report.checked += 1
                path = self._path(kind, key)
                try:
                    manifest = json.loads(self.fs.cat_file(f"{path}/{COMMIT}"))["arrays"]
                    group = self.open(kind, key)
                    for name, expected in manifest.items():
                        problem = _check_array(group[name], expected, checksums)
                        if problem:
                            report.problems.append((f"{path}/{name}", problem))
                except Exception as exc:  # any failure to read a committed entry is a finding, not a crash
                    report.problems.append((path, f"unreadable: {type(exc).__name__}: {exc}"))
        return report

    def gc(self, keep: set[str] | None = None, dry_run: bool = False) -> list[str]:
        """Remove leftovers and, when ``keep`` is given, committed entries whose key is not in it.

        ``keep`` is usually :meth:`referenced_keys` (every entry some view names).
        Returns the removed (or, with ``dry_run``, removable) paths.
        """
        doomed = [path for path, _ in self._leftovers()]
        if keep is not None:
            doomed += [self._path(kind, key) for kind in KINDS for key in self.keys(kind) if key not in keep]
        if not dry_run:
            for path in doomed:
                self.fs.rm(path, recursive=True)
        return doomed

    # ------------------------------------------------------------------- views

    def view_path(self, name: str) -> str:
        if not name or "/" in name or name.startswith(".") or "\\" in name:
            raise AgencerdasError(f"view name {name!r} is not a plain file name")
        return f"{self.root}/views/{name}.json"

    def put_json(self, path: str, payload: dict[str, Any]) -> None:
        """Write JSON at ``path`` in the store so readers never see half a file."""
        data = json.dumps(payload, indent=1, sort_keys=True).encode()
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)  # a single object PUT is atomic on object stores

    def get_json(self, path: str) -> dict[str, Any]:
        return json.loads(self.fs.cat_file(path))

    def view_names(self) -> list[str]:
        base = f"{self.root}/views"
        if not self.fs.exists(base):
            return []
        return sorted(p.rsplit("/", 1)[-1][: -len(".json")] for p in self.fs.ls(base, detail=False) if p.endswith(".json"))


def _check_array(array: zarr.Array, expected: dict[str, Any], checksums: bool) -> str | None:
    """Why ``array`` differs from its commit manifest entry, or None when it matches."""
    if list(array.shape) != list(expected["shape"]) or str(array.dtype) != expected["dtype"]:
        return f"shape/dtype {list(array.shape)} {array.dtype} != committed {expected['shape']} {expected['dtype']}"
    if not checksums:
        return None
    digest = xxhash.xxh3_128()
    step = array.chunks[0]
    for start in range(0, array.shape[0], step):
        digest.update(np.ascontiguousarray(array[start : start + step]).tobytes())
    if digest.hexdigest() != expected["xxh3"]:
        return "checksum mismatch: the stored data changed after commit"
    return None
