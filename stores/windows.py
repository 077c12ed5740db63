"""Rows of an entry at the base rate, and the downsampling every reader applies to them.

Features are stored once at the base frame rate (10 ms); a preset that runs its
model at 10x, 15x or 20x fewer frames downsamples when it reads, so every preset
reuses the same entries.
"""

from __future__ import annotations

import numpy as np
import zarr

from .errors import AgencerdasError
from .store import Store

POOLING = ("stack", "mean")


def downsample_features(x: np.ndarray, factor: int, pooling: str = "stack") -> np.ndarray:
    """Base-rate frames (frames, n_mels) → model frames (frames // factor, D).

    ``stack`` concatenates each group of ``factor`` consecutive frames (D = factor * n_mels,
    keeps all information, like SA-EEND's splicing + subsampling); ``mean`` averages
    them (D = n_mels). A trailing partial group is dropped; callers read whole groups.
    """
    if factor < 1:
        raise AgencerdasError(f"downsample factor must be >= 1, got {factor}")
    n = (len(x) // factor) * factor
    groups = x[:n].reshape(n // factor, factor, x.shape[1])
    if pooling == "stack":
        return groups.reshape(n // factor, factor * x.shape[1])
    if pooling == "mean":
        return groups.mean(axis=1, dtype=np.float32)
    raise AgencerdasError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLING)}")


def downsample_labels(y: np.ndarray, factor: int) -> np.ndarray:
    """Base-rate activity (frames, S) uint8 → model frames (frames // factor, S): a speaker
    is active in a model frame when active in at least half of its base frames."""
    n = (len(y) // factor) * factor
    groups = y[:n].reshape(n // factor, factor, y.shape[1])
    return (2 * groups.sum(axis=1, dtype=np.int32) >= factor).astype(np.uint8)


def downsample_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """Base-rate validity (frames,) bool → model frames (frames // factor,) bool, by the same
    majority rule as :func:`downsample_labels`."""
    return downsample_labels(mask[:, None].astype(np.uint8), factor)[:, 0].astype(bool)


def read_rows(array: zarr.Array, start: int, frames: int) -> np.ndarray:
    """Rows [start, start + frames) of a time-major array; the part past the end is zero-filled.

    Returns (frames, columns) in the array's dtype. Raises AgencerdasError for a negative start.
    """
    if start < 0 or frames < 0:
        raise AgencerdasError(f"window [{start}, {start + frames}) starts before the entry")
    out = np.zeros((frames, array.shape[1]), dtype=array.dtype)
    stop = min(start + frames, array.shape[0])
    if stop > start:
        out[: stop - start] = array[start:stop]
    return out


class EntryReader:
    """Features (and labels, when given) of one recording, opened once; ``frames`` base frames.

    Model-rate windows are cut from these arrays by ``training.windows.cut_window``."""

    def __init__(self, store: Store, features_key: str, labels_key: str | None = None):
        self.features = store.open("features", features_key)["feats"]
        self.labels = store.open("labels", labels_key)["labels"] if labels_key else None
        self.frames = self.features.shape[0]
