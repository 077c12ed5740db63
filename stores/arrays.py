"""Entry arrays: their layout (time-major, chunked along frames), the codec, and a checksumming writer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import xxhash
import zarr
from fsspec.implementations.local import LocalFileSystem

from .errors import AgencerdasError


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
    """Streams time blocks into the arrays of one entry while checksumming them.

    An array created with a ``frames_hint`` (its expected length) is written in place
    block by block, with no metadata rewrite per block; it is grown when a block
    overruns the hint and trimmed to the rows written when the entry is committed.
    Float blocks must be finite in the array's dtype (:meth:`append`); ``entry`` names the
    entry in that error.
    """

    def __init__(self, group: zarr.Group, entry: str = "entry"):
        self._group = group
        self._entry = entry
        self._arrays: dict[str, zarr.Array] = {}
        self._rows: dict[str, int] = {}
        self._digests: dict[str, Any] = {}

    def create(self, name: str, spec: ArraySpec, frames_hint: int = 0) -> None:
        """Create array ``name`` of shape (frames_hint, spec.columns), chunked along time."""
        self._arrays[name] = self._group.create_array(
            name,
            shape=(max(0, frames_hint), spec.columns),
            chunks=(spec.chunk_frames, spec.columns),
            dtype=spec.dtype,
            compressors=spec.codec,
            fill_value=0,
        )
        self._rows[name] = 0
        self._digests[name] = xxhash.xxh3_128()

    def append(self, name: str, block: np.ndarray) -> None:
        """Write rows (frames, columns) after those already written; converted to the array's dtype.

        Raises AgencerdasError when a float block holds NaN or infinity after that conversion
        (float32 beyond ±65504 becomes inf in float16): no reader could trust such an entry, and
        the write's context then commits nothing.
        """
        array = self._arrays[name]
        with np.errstate(over="ignore"):  # a value that overflows the dtype is refused below, by name
            block = np.ascontiguousarray(block, dtype=array.dtype)
        if block.ndim != 2 or block.shape[1] != array.shape[1]:
            raise ValueError(f"block of shape {block.shape} does not fit array {name} {array.shape}")
        if not len(block):
            return
        start = self._rows[name]
        stop = start + len(block)
        if block.dtype.kind in "fc" and not np.isfinite(block).all():
            raise AgencerdasError(
                f"{self._entry}: array {name!r} would hold NaN or infinity in rows {start}-{stop - 1} "
                f"(as {block.dtype}); nothing was committed. The input behind it is out of range "
                "(the run summary names the file): fix or remove that file and rerun"
            )
        if stop > array.shape[0]:
            array.resize((stop, array.shape[1]))
        array[start:stop] = block
        self._rows[name] = stop
        self._digests[name].update(block.tobytes())

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        """Add attributes known only after the arrays are written (e.g. the frame count)."""
        self._group.update_attributes(attrs)

    def manifest(self) -> dict[str, dict[str, Any]]:
        """Trim every array to the rows written; their shape, dtype and content checksum."""
        for name, array in self._arrays.items():
            if array.shape[0] != self._rows[name]:
                array.resize((self._rows[name], array.shape[1]))
        return {
            name: {"shape": list(array.shape), "dtype": str(array.dtype), "xxh3": self._digests[name].hexdigest()}
            for name, array in self._arrays.items()
        }


def check_array(array: zarr.Array, expected: dict[str, Any], checksums: bool) -> str | None:
    """Why ``array`` differs from its commit manifest entry or holds NaN or infinity, or None when it is sound.

    With ``checksums`` the data is read (chunk by chunk) and checked; without, only shape and dtype.
    Non-finite floats are a problem even when the checksum matches: an entry committed before the
    writer refused them (:meth:`EntryWriter.append`) is intact and still unusable.
    """
    if list(array.shape) != list(expected["shape"]) or str(array.dtype) != expected["dtype"]:
        return f"shape/dtype {list(array.shape)} {array.dtype} != committed {expected['shape']} {expected['dtype']}"
    if not checksums:
        return None
    digest = xxhash.xxh3_128()
    step = array.chunks[0]
    floats = np.dtype(array.dtype).kind in "fc"
    non_finite = 0
    for start in range(0, array.shape[0], step):
        block = np.ascontiguousarray(array[start : start + step])
        digest.update(block.tobytes())
        if floats:
            non_finite += block.size - int(np.count_nonzero(np.isfinite(block)))
    if digest.hexdigest() != expected["xxh3"]:
        return "checksum mismatch: the stored data changed after commit"
    if non_finite:
        return (f"{non_finite} of {array.size} values are NaN or infinite: the entry is intact but unusable; "
                "delete this entry's folder and rerun `agencerdas features` (it now refuses the input, naming the file)")
    return None
