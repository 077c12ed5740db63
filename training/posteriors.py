"""A model run over whole recordings from the store: what the segmentation step of the pipeline
(:mod:`scoring.pipeline`) takes: stitched posteriors of every frame, or each chunk's slots with their
embeddings for clustering (validation during training, and inference)."""

from __future__ import annotations

from contextlib import AbstractContextManager

import numpy as np
import torch

from agencerdas.scoring.pipeline import Chunks
from agencerdas.scoring.settings import PipelineSettings
from agencerdas.scoring.stitch import chunk_starts, stitched_posteriors

from .config import TrainConfig
from .windows import WindowFormat, cut_window


#: Chunks of one recording run through the model together (inputs held: batch x window x D floats).
CHUNK_BATCH = 32


def predictor(model: torch.nn.Module, device: torch.device, autocast: AbstractContextManager):
    """``predict(x)`` speaker probabilities, no gradients: one chunk (n, D) -> (n, S), or a stack of
    chunks (B, n, D) -> (B, n, S) run as one batch on ``device``; ``predict(x, embeddings=True)`` gives
    the slots' embeddings too: ((B, n, S), (B, S, E)) for a stack (zeros (B, S, 1) for a model without the
    embedding head, whose slots a pretrained encoder embeds)."""

    def predict(x: np.ndarray, embeddings: bool = False):
        single = x.ndim == 2
        inputs = torch.from_numpy(np.ascontiguousarray(x)).to(device)
        with torch.no_grad(), autocast:
            output = model(inputs[None] if single else inputs)
        probs = model.activity(output.logits).cpu().numpy()
        if embeddings:
            if output.embeddings is None:  # no head: a pretrained encoder embeds the slots instead
                return probs, np.zeros((*probs.shape[::2], 1), dtype=np.float32)
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


def pipeline_settings(cfg: TrainConfig, frame_shift_s: float, clustering: bool, **choices) -> PipelineSettings:
    """The pipeline of a model trained with ``cfg`` (``frame_shift_s`` seconds per model frame), as configured:
    stitched training windows, or clustered chunks of ``chunk_s`` every ``chunk_hop_s``; decisions from
    ``cfg``. ``choices``: any other :class:`PipelineSettings` field (numbers of speakers, embeddings, ...)."""
    chunk = max(1, round(cfg.chunk_s / frame_shift_s))
    return PipelineSettings(window=chunk if clustering else cfg.window,
                            overlap=1.0 - min(chunk, round(cfg.chunk_hop_s / frame_shift_s)) / chunk if clustering else 0.5,
                            threshold=cfg.threshold, fill_speech=cfg.fill_speech, median_frames=cfg.median_frames,
                            max_overlap=cfg.max_overlap if cfg.powerset else None, clustering=clustering,
                            cluster_threshold=cfg.cluster_threshold, **choices)


def recording_outputs(predict, features, fmt: WindowFormat, frames: int,
                      settings: PipelineSettings) -> Chunks | np.ndarray:
    """What the model says of a whole recording of ``frames`` base frames, as ``settings`` run it: the
    recording's :class:`~scoring.pipeline.Chunks` (clustering) or its stitched posteriors (model frames, S)."""
    if settings.clustering:
        return recording_chunks(predict, features, fmt, frames, settings.window, settings.overlap)
    return recording_posteriors(predict, features, fmt, frames, settings.window, settings.overlap)
