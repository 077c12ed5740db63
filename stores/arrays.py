"""Entry arrays: their layout (time-major, chunked along frames), the codec, and a checksumming writer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import xxhash
import zarr
from fsspec.implementations.local import LocalFileSystem


@dataclass(frozen=True)
class ArraySpec:
    """How one time-major array of an entry is laid out: rows are frames."""

    columns: int
    dtype: str
    chunk_frames: int
    codec: Any  # a zarr.codecs.* codec, or None for uncompressed


def zarr_store(fs: fsspec.AbstractFileSystem, path: str, read_only: bool) -> zarr.abc.store.Store:
    """A Zarr store object for ``path`` on ``fs`` (a plain LocalStore on local disk, faster than fsspec).

    Zarr drives fsspec from its own event loop, so it needs a filesystem created
    with ``asynchronous=True`` (what ``FsspecStore.from_url`` builds): an async
    implementation such as s3fs is re-instantiated that way with the same options
    (fsspec caches the instance, so connections are reused), a synchronous one is wrapped.
    """
    if isinstance(fs, LocalFileSystem):
        return zarr.storage.LocalStore(path, read_only=read_only)
    if not fs.async_impl:
        from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

        fs = AsyncFileSystemWrapper(fs, asynchronous=True)
    elif not fs.asynchronous:
        fs = type(fs)(*fs.storage_args, **{**fs.storage_options, "asynchronous": True})
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


def check_array(array: zarr.Array, expected: dict[str, Any], checksums: bool) -> str | None:
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
