"""Model-rate windows cut from stored base-rate features: the one reader of training, validation
and inference.

Every model input goes through :func:`cut_window`: rows ``[start, start + frames)`` at
the base rate (10 ms), of which the first ``valid`` lie inside the recording (a cap
such as ``AUDIO_CAP_S`` may end it before the stored entry does); those rows are
normalised per mel bin (and, for a training window with an augmentation seed,
perturbed); the rest is zero and masked; then groups of ``downsample`` base frames
become one model frame. Training windows, validation and whole-recording inference
differ only in where ``start`` and ``frames`` come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from agencerdas.stores import Store, ViewRecording, downsample_features, downsample_labels, downsample_mask
from agencerdas.stores.errors import AgencerdasError

from .augment import Augment


#: The per-bin std floor of :meth:`Normalizer.fit`, as a fraction of the median bin's std.
STD_FLOOR = 0.1


@dataclass
class Normalizer:
    """Per-bin mean and standard deviation of the base-rate log-mel features (n_mels,)."""

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        # x -> x * scale - offset, computed once rather than per window.
        self._scale = torch.from_numpy((1.0 / self.std).astype(np.float32))
        self._offset = torch.from_numpy((self.mean / self.std).astype(np.float32))

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        """Normalised float32 copy of ``feats`` (frames, n_mels), any float dtype.

        torch converts float16 about 7x faster than numpy's ``astype``, and the
        in-place scale and shift avoid two temporaries: this is the loader's hot path.
        The copy is explicit: for float32 input ``.float()`` would return the input's own
        memory, and the in-place arithmetic would overwrite it (a cached entry, say).
        """
        out = torch.from_numpy(np.ascontiguousarray(feats)).to(torch.float32, copy=True)
        return out.mul_(self._scale).sub_(self._offset).numpy()

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def identity(cls, n_mels: int) -> "Normalizer":
        """Mean 0, std 1: features pass unchanged (as float32)."""
        return cls(np.zeros(n_mels, np.float32), np.ones(n_mels, np.float32))

    @classmethod
    def from_dict(cls, payload: dict) -> "Normalizer":
        return cls(np.asarray(payload["mean"], np.float32), np.asarray(payload["std"], np.float32))

    @classmethod
    def fit(cls, store: Store, recordings: list[ViewRecording], scored: list[np.ndarray | None] | None = None,
            max_frames_each: int = 20000) -> "Normalizer":
        """Statistics over the first ``max_frames_each`` frames of every recording (float64 sums),
        counting only frames inside each recording's ``scored`` mask (its UEM; None: every frame)."""
        total, sq, count = 0.0, 0.0, 0
        for index, rec in enumerate(recordings):
            feats = store.open("features", rec.features)["feats"]
            block = np.asarray(feats[: min(max_frames_each, feats.shape[0])], dtype=np.float64)
            inside = scored[index] if scored is not None else None
            if inside is not None:
                block = block[inside[: len(block)]]
            total = total + block.sum(axis=0)
            sq = sq + (block**2).sum(axis=0)
            count += len(block)
        if count == 0:
            raise AgencerdasError("no feature frames to normalise with; the training split is empty")
        mean = total / count
        std = np.sqrt(np.maximum(sq / count - mean**2, 0.0))
        # A band that is constant in training (upsampled narrowband audio has nothing above 4 kHz)
        # would otherwise be scaled by ~1e4 and explode on wideband input: no band is scaled more
        # than a band of STD_FLOOR x the median band's spread would be.
        std = np.maximum(std, max(STD_FLOOR * float(np.median(std)), 1e-4))
        return cls(mean.astype(np.float32), std.astype(np.float32))


class WindowLabels(NamedTuple):
    """A window's labels at the model rate after the speaker rule of :meth:`WindowFormat.labels`."""

    activity: np.ndarray  # (frames // downsample, S) uint8
    crowded: np.ndarray  # (frames // downsample,) bool: a speaker the window leaves out is active
    columns: np.ndarray  # (S,) int64: the stored column each label column holds, -1 for an added silent one


class Cut(NamedTuple):
    """One window at the model rate (:func:`cut_window`)."""

    features: np.ndarray  # (frames // downsample, D) float32
    labels: np.ndarray | None  # (frames // downsample, S) uint8
    mask: np.ndarray  # (frames // downsample,) bool: frames the loss scores
    columns: np.ndarray | None  # (S,) int64: the stored column of each label column, -1: none


@dataclass(frozen=True)
class WindowFormat:
    """How base-rate rows become model input: normalise, (augment), downsample by ``downsample``
    with ``pooling`` (``stack``: D = downsample x n_mels; ``mean``: D = n_mels), and labels fitted to
    ``max_speakers`` columns by the window's speakers (None: as stored)."""

    normalizer: Normalizer
    downsample: int
    pooling: str = "stack"
    max_speakers: int | None = None
    augment: Augment | None = None

    def __post_init__(self) -> None:
        if self.downsample < 1:
            raise AgencerdasError(f"downsample factor must be >= 1, got {self.downsample}")

    def features(self, rows: np.ndarray, frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Model input (frames // downsample, D) float32 from ``rows`` (valid, n_mels), valid <= frames:
        normalised (augmented with ``rng``), zero-padded to ``frames`` base frames, downsampled."""
        if rng is not None and self.augment is not None:
            x = self.augment.mask(self.normalizer(self.augment.spectral(rows, rng)), rng)
        else:
            x = self.normalizer(rows)
        return np.ascontiguousarray(downsample_features(_pad(x, frames), self.downsample, self.pooling))

    def labels(self, rows: np.ndarray, frames: int) -> WindowLabels:
        """The window's labels from base-rate ``rows`` (valid, S_stored), valid <= frames, at the model rate.

        With ``max_speakers`` = S: a recording of at most S stored columns keeps them, then silent
        columns. With more, the window keeps the S columns with the most active base frames in it (ties:
        the lower column), in stored order, and ``crowded`` marks the model frames where a column it
        leaves out is active (by the majority rule of the labels): the loss must not score them, or it
        would train that speaker's speech as silence.
        """
        labels = downsample_labels(_pad(rows, frames), self.downsample)
        stored, speakers = rows.shape[1], self.max_speakers
        if speakers is None or stored <= speakers:
            width = stored if speakers is None else speakers
            columns = np.arange(width, dtype=np.int64)
            columns[stored:] = -1
            return WindowLabels(np.pad(labels, ((0, 0), (0, width - stored))), np.zeros(len(labels), bool), columns)
        keep = kept_columns(rows.sum(axis=0, dtype=np.int64), speakers)
        left_out = np.ones(stored, dtype=bool)
        left_out[keep] = False
        return WindowLabels(labels[:, keep], labels[:, left_out].any(axis=1), keep)

    def mask(self, valid: int, frames: int, scored: np.ndarray | None = None) -> np.ndarray:
        """(frames // downsample,) bool: model frames inside the recording (majority of their base frames),
        and inside its UEM where ``scored`` (valid,) marks the scored base frames."""
        inside = np.arange(frames) < valid
        if scored is not None:
            inside[:valid] &= scored
        return downsample_mask(inside, self.downsample)


def scored_frames(store: Store, rec: ViewRecording, frames: int) -> np.ndarray | None:
    """(frames,) bool: base frames whose centre lies inside the recording's UEM; None when it has none.

    Frames outside the UEM were never annotated: they are masked out of the loss, the frame
    error and the normaliser statistics rather than trained as silence.
    """
    if not rec.labels:
        return None
    attrs = store.open("labels", rec.labels).attrs.asdict()
    if not attrs.get("uem"):
        return None
    centres = (np.arange(frames) + 0.5) * attrs["frame_shift_s"]
    inside = np.zeros(frames, dtype=bool)
    for start, end in attrs["uem"]:
        inside |= (centres >= start) & (centres < end)
    return inside


def cut_window(fmt: WindowFormat, feats, labels, start: int, frames: int, end: int,
               rng: np.random.Generator | None = None, scored: np.ndarray | None = None) -> Cut:
    """The window of base frames ``[start, start + frames)`` of one recording, at the model rate.

    Args:
        fmt: normalisation, augmentation, downsampling and the window's speakers.
        feats: time-major base-rate log-mel (n, n_mels), a Zarr array or numpy, any float dtype.
        labels: time-major base-rate activity (n, S_stored), or None.
        start: first base frame (>= 0).
        frames: window length in base frames; a multiple of ``fmt.downsample``.
        end: base frames of the recording in use (<= n; a cap may shorten it): rows from
            ``end`` on are zero and masked, as is everything past the entry.
        rng: seeds the window's augmentation (training only).
        scored: (end,) bool, the frames inside the recording's UEM (:func:`scored_frames`); frames
            outside it are masked like padding. None: every frame is scored.

    Returns:
        :class:`Cut`: float32 features (frames // downsample, D); uint8 labels (frames // downsample, S)
        or None; the bool mask (frames // downsample,), without the frames where a speaker the window
        leaves out is active (:meth:`WindowFormat.labels`); the stored column of each label column.
    """
    if start < 0 or frames < 0:
        raise AgencerdasError(f"window [{start}, {start + frames}) starts before the entry")
    valid = max(0, min(frames, end - start))
    rows = np.asarray(feats[start : start + valid])
    x = fmt.features(rows, frames, rng)
    mask = fmt.mask(valid, frames, None if scored is None else scored[start : start + valid])
    if labels is None:
        return Cut(x, None, mask, None)
    y = fmt.labels(np.asarray(labels[start : start + valid]), frames)
    return Cut(x, y.activity, mask & ~y.crowded, y.columns)


def _pad(x: np.ndarray, frames: int) -> np.ndarray:
    """``x`` (n, C) zero-padded to (frames, C)."""
    if len(x) == frames:
        return x
    out = np.zeros((frames, x.shape[1]), dtype=x.dtype)
    out[: len(x)] = x
    return out


def kept_columns(counts: np.ndarray, speakers: int) -> np.ndarray:
    """Column indices (speakers,) int64, ascending, of the ``speakers`` columns with the most active base
    frames ``counts`` (S_stored,) in a window, ties to the lower column (the window rule)."""
    return np.sort(np.argsort(-counts, kind="stable")[:speakers]).astype(np.int64)
