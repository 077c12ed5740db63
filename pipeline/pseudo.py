"""Pseudo labels for recordings without annotations: energy VAD + agglomerative speaker clustering.

Method (all from the stored log-mel features, nothing downloaded):

1. **Speech activity.** Frame log-energy is the log of the summed mel power. The noise
   floor is its 10th percentile; a frame is speech when it exceeds the floor by
   ``vad_margin_db``. A median filter of ``vad_smooth_frames`` removes blips and fills gaps.
2. **Embeddings.** Speech is cut into windows of ``embed_frames`` with hop ``embed_hop``
   (1 s / 0.5 s by default); each window is described by the mean and standard deviation
   of its MFCCs c1..c``n_mfcc`` (DCT of the mean-normalised log-mel; c0, the loudness,
   left out), standardised over the recording and L2-normalised.
3. **Clustering.** Average-linkage agglomerative clustering on cosine distance
   (scipy), cut at ``cluster_threshold``, and never more than ``max_speakers`` clusters.
   Every speech frame takes the cluster of the nearest window centre; pseudo labels
   have no overlapped speech.

The method and its settings are part of the labels key and the entry is marked
``pseudo: true`` everywhere it appears.

Any other labeller plugs in through :class:`PseudoLabeler` (``training`` provides one
that runs a trained agencerdas model over the stored features); ``PseudoConfig`` is
the default one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.fft import dct
from scipy.ndimage import median_filter

from agencerdas.stores.errors import AgencerdasError

METHOD = "energy-vad+stats-ahc"
#: Frames per block of the per-frame work (80 s at 10 ms): its float64 / float32 temporaries
#: are one block's, not the recording's (a 2-hour recording is 720,000 frames).
BLOCK_FRAMES = 8000


@dataclass(frozen=True)
class AudioRegion:
    """Where a recording's samples are: its file, and the region of it (seconds; None: the whole file)."""

    path: str
    offset_s: float | None = None
    duration_s: float | None = None


class PseudoLabeler(Protocol):
    """Labels one recording from its stored features; pickled to every worker that labels."""

    def describe(self) -> dict:
        """Method name and every setting that changes the labels (they enter the labels key)."""

    def __call__(self, logmel: np.ndarray, audio: AudioRegion) -> np.ndarray:
        """Speaker activity (frames, S) from log-mel features (frames, n_mels), 10 ms base frames; ``audio`` says
        where the recording's samples are, for a labeller that hears them."""


@dataclass(frozen=True)
class PseudoConfig:
    """The default labeller: energy VAD + statistics AHC (frames are 10 ms base frames)."""

    vad_margin_db: float = 12.0
    vad_smooth_frames: int = 31
    embed_frames: int = 100
    embed_hop: int = 50
    n_mfcc: int = 20
    cluster_threshold: float = 1.0
    max_speakers: int = 4

    def describe(self) -> dict:
        return {"method": METHOD, **asdict(self)}

    def __call__(self, logmel: np.ndarray, audio: AudioRegion | None = None) -> np.ndarray:
        return pseudo_labels(logmel, self)


def speech_activity(logmel: np.ndarray, config: PseudoConfig) -> np.ndarray:
    """Boolean speech mask (frames,) from log-mel features (frames, n_mels)."""
    energy = np.empty(len(logmel))  # natural log of the summed mel power per frame
    for start in range(0, len(logmel), BLOCK_FRAMES):
        block = logmel[start : start + BLOCK_FRAMES].astype(np.float64)
        energy[start : start + BLOCK_FRAMES] = np.log(np.exp(block).sum(axis=1) + 1e-20)
    energy_db = 10 / np.log(10) * energy
    floor = np.percentile(energy_db, 10)
    speech = energy_db > floor + config.vad_margin_db
    return median_filter(speech.astype(np.uint8), size=config.vad_smooth_frames, mode="nearest").astype(bool)


def _embeddings(logmel: np.ndarray, speech: np.ndarray, config: PseudoConfig) -> tuple[np.ndarray, np.ndarray]:
    """(window centres in frames (W,), embeddings (W, 2 * n_mfcc)) of windows that are mostly speech."""
    mean = logmel[speech].mean(axis=0)
    feats = np.empty((len(logmel), min(config.n_mfcc, logmel.shape[1] - 1)), dtype=np.float32)  # MFCC c1..c<n_mfcc>
    for start in range(0, len(logmel), BLOCK_FRAMES):
        normalised = logmel[start : start + BLOCK_FRAMES].astype(np.float32) - mean
        feats[start : start + BLOCK_FRAMES] = dct(normalised, axis=1, norm="ortho")[:, 1 : config.n_mfcc + 1]
    centres, vectors = [], []
    last = max(1, len(feats) - config.embed_frames + 1)
    for start in range(0, last, config.embed_hop):
        window = slice(start, start + config.embed_frames)
        voiced = speech[window]
        if voiced.mean() < 0.5:
            continue
        frames = feats[window][voiced]
        centres.append(start + config.embed_frames // 2)
        vectors.append(np.concatenate([frames.mean(axis=0), frames.std(axis=0)]))
    if not vectors:
        return np.zeros(0, dtype=int), np.zeros((0, 2 * feats.shape[1]), dtype=np.float32)
    vectors = np.asarray(vectors)
    vectors = (vectors - vectors.mean(axis=0)) / (vectors.std(axis=0) + 1e-6)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-9
    return np.asarray(centres), vectors


def pseudo_labels(logmel: np.ndarray, config: PseudoConfig) -> np.ndarray:
    """Pseudo speaker activity (frames, config.max_speakers) uint8 for one recording.

    Raises AgencerdasError when the recording holds no detectable speech.
    """
    speech = speech_activity(logmel, config)
    if not speech.any():
        raise AgencerdasError("no speech detected for pseudo labels (silent or very noisy recording)")
    centres, vectors = _embeddings(logmel, speech, config)
    activity = np.zeros((len(logmel), config.max_speakers), dtype=np.uint8)
    if len(vectors) < 2:
        activity[speech, 0] = 1
        return activity
    tree = linkage(vectors, method="average", metric="cosine")
    clusters = fcluster(tree, t=config.cluster_threshold, criterion="distance")
    if clusters.max() > config.max_speakers:
        clusters = fcluster(tree, t=config.max_speakers, criterion="maxclust")
    # Relabel clusters by first appearance, like annotated speakers.
    _, first = np.unique(clusters, return_index=True)
    rank = np.zeros(clusters.max() + 1, dtype=np.intp)
    rank[clusters[np.sort(first)]] = np.arange(len(first))
    frame_idx = np.flatnonzero(speech)
    activity[frame_idx, rank[clusters[nearest_centre(frame_idx, centres)]]] = 1
    return activity


def nearest_centre(frames: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index into ``centres`` (W,) sorted ascending, of the centre nearest to each of ``frames`` (N,).

    A frame halfway between two centres takes the earlier one. O(N log W) time and O(N)
    memory: the frame-by-window distance matrix would be ~7 GB for an hour of speech.
    """
    right = np.searchsorted(centres, frames).clip(max=len(centres) - 1)
    left = (right - 1).clip(min=0)
    return np.where(np.abs(centres[right] - frames) < np.abs(frames - centres[left]), right, left)


def by_first_appearance(activity: np.ndarray, speakers: int) -> np.ndarray:
    """(frames, speakers) uint8: the active columns of ``activity`` (frames, S) in order of first
    speech, like annotated speakers; when more than ``speakers`` are active, the ones with the most speech."""
    activity = np.asarray(activity).astype(bool)
    talk = activity.sum(axis=0)
    active = [int(c) for c in np.argsort(-talk, kind="stable")[:speakers] if talk[c]]
    active.sort(key=lambda c: int(activity[:, c].argmax()))
    out = np.zeros((len(activity), speakers), dtype=np.uint8)
    out[:, : len(active)] = activity[:, active]
    return out
