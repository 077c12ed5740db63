"""A model run over whole recordings from the store: speaker posteriors of every frame (validation,
inference), by stitching overlapping chunks or, for a model with an embedding head, by clustering the
chunks' speakers across the recording (any number of speakers)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import torch

from agencerdas.scoring.cluster import active_slots, assign_slots, cluster_slots, overlap_add
from agencerdas.scoring.stitch import InferenceConfig, chunk_starts, stitched_posteriors

from .config import TrainConfig
from .windows import WindowFormat, cut_window


#: Chunks of one recording run through the model together (inputs held: batch x window x D floats).
CHUNK_BATCH = 32
#: A chunk's slot takes part in clustering when it is active this long (an embedding pooled over a few
#: frames is mostly noise); shorter slots are then assigned to the clusters found.
CLUSTER_MIN_ACTIVE_S = 1.0


def predictor(model: torch.nn.Module, device: torch.device, autocast: AbstractContextManager):
    """``predict(x)`` speaker probabilities, no gradients: one chunk (n, D) -> (n, S), or a stack of
    chunks (B, n, D) -> (B, n, S) run as one batch on ``device``; ``predict(x, embeddings=True)`` gives
    the slots' embeddings too: ((B, n, S), (B, S, E)) for a stack (a model with an embedding head)."""

    def predict(x: np.ndarray, embeddings: bool = False):
        single = x.ndim == 2
        inputs = torch.from_numpy(np.ascontiguousarray(x)).to(device)
        with torch.no_grad(), autocast:
            output = model(inputs[None] if single else inputs)
        probs = model.activity(output.logits).cpu().numpy()
        if embeddings:
            return probs, output.embeddings.float().cpu().numpy()
        return probs[0] if single else probs

    return predict


def model_rate_reader(features, fmt: WindowFormat, frames: int):
    """``read(start, n)`` over model frames of a stored features array, and the number of model frames.

    ``frames`` base frames are used (a cap may shorten the recording); the last partial group
    of base frames is zero-padded to a whole model frame (the rule of :func:`cut_window`).
    """
    ds = fmt.downsample

    def read(start: int, n: int) -> np.ndarray:
        return cut_window(fmt, features, None, start * ds, n * ds, frames)[0]

    return read, -(-frames // ds)


def recording_posteriors(predict, features, fmt: WindowFormat, frames: int, window: int,
                         overlap: float = 0.5, batch: int = CHUNK_BATCH) -> np.ndarray:
    """Stitched speaker posteriors (model frames, S) for a whole recording of ``frames`` base frames.

    ``window`` is the chunk length in model frames; chunks overlap by ``overlap``. The recording's
    chunks go through ``predict`` (a :func:`predictor`) ``batch`` at a time; stitching is on the host.
    """
    read, n_model = model_rate_reader(features, fmt, frames)
    step = max(1, round(window * (1 - overlap)))
    return stitched_posteriors(predict, read, n_model, window, step, batch)


@dataclass
class Chunks:
    """What the model says of each chunk of a recording, before clustering.

    Attributes:
        starts: (C,) first model frame of each chunk.
        activity: (C, L, S) float32 slot posteriors.
        embeddings: (C, S, E) float32 unit vectors, one per slot.
        frames: the recording's length in model frames (the chunks cover [0, frames)).
    """

    starts: np.ndarray
    activity: np.ndarray
    embeddings: np.ndarray
    frames: int


def recording_chunks(predict, features, fmt: WindowFormat, frames: int, window: int, overlap: float = 0.5,
                     batch: int = CHUNK_BATCH) -> Chunks:
    """:class:`Chunks` of a whole recording of ``frames`` base frames: chunks of ``window`` model frames
    overlapping by ``overlap`` (the last one ends with the recording), ``batch`` at a time."""
    read, n_model = model_rate_reader(features, fmt, frames)
    starts = list(chunk_starts(n_model, window, max(1, round(window * (1 - overlap)))))
    length = min(window, n_model)
    activity, embeddings = [], []
    for first in range(0, len(starts), batch):
        probs, vectors = predict(np.stack([read(start, length) for start in starts[first : first + batch]]),
                                 embeddings=True)
        activity.append(probs)
        embeddings.append(vectors)
    return Chunks(np.asarray(starts, dtype=np.int64), np.concatenate(activity), np.concatenate(embeddings), n_model)


def clustered_posteriors(chunks: Chunks, inf: InferenceConfig, frame_shift_s: float) -> np.ndarray:
    """Posteriors (model frames, K) of the K speakers found by clustering ``chunks``' slots.

    Slots active at least :data:`CLUSTER_MIN_ACTIVE_S` are clustered (average linkage on cosine
    distances, two slots of one chunk never joined; ``inf``'s threshold or number of speakers);
    then every other slot is assigned to the nearest cluster centroid, one chunk at a time and never
    two slots of a chunk to one speaker; each speaker's posteriors are its slots' overlap-added.
    """
    threshold = 0.5 if inf.max_overlap is not None else inf.threshold
    active = active_slots(chunks.activity, threshold, 1)
    confident = active_slots(chunks.activity, threshold, max(1, round(CLUSTER_MIN_ACTIVE_S / frame_shift_s)))
    # A short clip may have no slot active that long: its speech is still clustered, on what there is.
    labels = cluster_slots(chunks.embeddings, confident if confident.any() else active, inf.cluster_threshold,
                           inf.num_speakers, inf.min_speakers, inf.max_speakers)
    # Every other slot goes to a speaker its chunk lacks, as pyannote assigns them: one left out would leave
    # its speaker's frames averaged down by the other chunks covering them.
    labels = assign_slots(chunks.embeddings, labels, np.ones_like(active))
    post = overlap_add(chunks.activity, labels, chunks.starts, chunks.frames)
    # Nobody speaks: one silent speaker keeps the shape every consumer of posteriors expects.
    return post if post.shape[1] else np.zeros((chunks.frames, 1), dtype=np.float32)


def inference_settings(cfg: TrainConfig, frame_shift_s: float, clustering: bool, tuned: dict | None = None,
                       **speakers: int | None) -> InferenceConfig:
    """The inference of a model trained with ``cfg`` (``frame_shift_s`` seconds per model frame): stitched
    training windows, or clustered chunks of ``chunk_s`` every ``chunk_hop_s``; decisions from ``tuned``
    (a tuned.json) where given, else ``cfg``'s; ``speakers``: num/min/max_speakers for clustering."""
    settings = tuned or {}
    chunk = max(1, round(cfg.chunk_s / frame_shift_s))
    return InferenceConfig(window=chunk if clustering else cfg.window,
                           overlap=1.0 - min(chunk, round(cfg.chunk_hop_s / frame_shift_s)) / chunk if clustering else 0.5,
                           threshold=settings.get("threshold", cfg.threshold),
                           fill_speech=settings.get("fill_speech", cfg.fill_speech),
                           median_frames=settings.get("median_frames", cfg.median_frames),
                           max_overlap=cfg.max_overlap if cfg.powerset else None, clustering=clustering,
                           cluster_threshold=settings.get("cluster_threshold", cfg.cluster_threshold), **speakers)


def whole_recording(predict, features, fmt: WindowFormat, frames: int, inf: InferenceConfig,
                    frame_shift_s: float) -> np.ndarray:
    """Speaker posteriors (model frames, S or K) of a whole recording of ``frames`` base frames, by ``inf``:
    stitched (S slots) or clustered (K speakers found)."""
    if inf.clustering:
        chunks = recording_chunks(predict, features, fmt, frames, inf.window, inf.overlap)
        return clustered_posteriors(chunks, inf, frame_shift_s)
    return recording_posteriors(predict, features, fmt, frames, inf.window, inf.overlap)
