"""A model run over whole recordings from the store: stitched speaker posteriors (validation, inference)."""

from __future__ import annotations

from contextlib import AbstractContextManager

import numpy as np
import torch

from scoring.stitch import stitched_posteriors

from .windows import WindowFormat, cut_window


#: Chunks of one recording run through the model together (inputs held: batch x window x D floats).
CHUNK_BATCH = 32


def predictor(model: torch.nn.Module, device: torch.device, autocast: AbstractContextManager):
    """``predict(x)`` speaker probabilities, no gradients: one chunk (n, D) -> (n, S), or a stack of
    chunks (B, n, D) -> (B, n, S) run as one batch on ``device``."""

    def predict(x: np.ndarray) -> np.ndarray:
        single = x.ndim == 2
        inputs = torch.from_numpy(np.ascontiguousarray(x)).to(device)
        with torch.no_grad(), autocast:
            logits, _ = model(inputs[None] if single else inputs)
        probs = model.activity(logits).cpu().numpy()
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
