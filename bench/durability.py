"""Durability (section 7): what fsyncing every local commit costs (``Store(durable=...)``).

The same feature entries (``frames`` x 80 float16 log-mel-like values, with the
pipeline's chunking and codec) are written into two fresh local stores in one
process, one durable (the default: every file and directory of an entry fsynced
before the rename, the parent after it) and one not, alternating entry by entry
and which store goes first, so drift in the machine's load falls on both. Seconds
are the wall time of the ``Store.write`` blocks, one untimed warm-up entry per
store aside; ``ratio`` = durable seconds / non-durable seconds. The stores sit in
the bench's scratch folder, so the figure belongs to that folder's filesystem
(``filesystem``): on tmpfs an fsync costs nothing, on a disk it waits for the device.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import psutil

from agencerdas.pipeline.tasks import CHUNK_FRAMES
from agencerdas.stores import ArraySpec, Store, content_key, default_codec

from .measure import ratio

#: (entries, frames per entry) written per bench size; 6,000 frames is one minute of audio.
RUNS: dict[str, tuple[int, int]] = {"tiny": (4, 1000), "small": (50, 6000), "full": (50, 6000)}
N_MELS = 80


def filesystem(path: Path) -> str | None:
    """Type of the filesystem holding ``path`` (``ext4``, ``tmpfs``, ...), None when no mount matches."""
    path = os.path.realpath(path)
    mounts = [p for p in psutil.disk_partitions(all=True)
              if path == p.mountpoint or path.startswith(p.mountpoint.rstrip("/") + "/")]
    return max(mounts, key=lambda p: len(p.mountpoint)).fstype if mounts else None


def _features(index: int, frames: int) -> np.ndarray:
    """Log-mel-like float16 rows (frames, N_MELS): a smooth spectral envelope plus noise, so they
    compress about as real features do (random bytes would not, constant ones would vanish)."""
    rng = np.random.default_rng(index)
    envelope = np.linspace(-2.0, -12.0, N_MELS)[None, :] + 4.0 * np.sin(np.arange(frames) / 37.0)[:, None]
    return (envelope + rng.normal(0.0, 2.0, (frames, N_MELS))).astype(np.float16)


def _write(store: Store, key: str, feats: np.ndarray) -> float:
    """Seconds to write and commit one features entry."""
    start = time.perf_counter()
    with store.write("features", key, {"frames": len(feats)}) as writer:
        writer.create("feats", ArraySpec(N_MELS, "float16", CHUNK_FRAMES, default_codec()), frames_hint=len(feats))
        writer.append("feats", feats)
    return time.perf_counter() - start


def durability_section(work: Path, size: str, progress: Callable[[str], None]) -> dict[str, Any]:
    """Write :data:`RUNS` ``[size]`` entries with and without fsync; the seconds of each and their ratio.

    Keys of the result: ``entries``, ``frames``, ``entry_mb`` (raw float16 MiB per entry),
    ``filesystem``, ``durable`` and ``plain`` (``seconds``, ``ms_per_entry``), ``ratio``
    (durable / plain seconds) and ``extra_ms_per_entry``.
    """
    entries, frames = RUNS[size]
    root = work / "durability"
    shutil.rmtree(root, ignore_errors=True)
    stores = {"durable": Store(root / "durable", durable=True), "plain": Store(root / "plain", durable=False)}
    kind = filesystem(root)
    progress(f"{entries} entries of {frames} x {N_MELS} float16, with and without fsync (on {kind})")
    seconds = {name: 0.0 for name in stores}
    try:
        for store in stores.values():
            _write(store, content_key("bench-durability", "warm-up"), _features(entries, frames))
        for index in range(entries):
            feats, key = _features(index, frames), content_key("bench-durability", index)
            order = list(stores) if index % 2 == 0 else list(reversed(stores))
            for name in order:
                seconds[name] += _write(stores[name], key, feats)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    runs = {name: {"seconds": s, "ms_per_entry": 1e3 * s / entries} for name, s in seconds.items()}
    return {"entries": entries, "frames": frames, "entry_mb": frames * N_MELS * 2 / 2**20,
            "filesystem": kind, **runs, "ratio": ratio(seconds["durable"], seconds["plain"]),
            "extra_ms_per_entry": runs["durable"]["ms_per_entry"] - runs["plain"]["ms_per_entry"]}
