"""Array helpers shared by the encoders: input waveforms checked, output rows normalised."""

from __future__ import annotations

import numpy as np


def unit_rows(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; an all-zero row stays zero rather than becoming NaN."""
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return (embeddings / np.maximum(norms, 1e-12)).astype(np.float32)


def as_waveform(waveform: np.ndarray, index: int) -> np.ndarray:
    """``waveform`` as a contiguous float32 (samples,) array; ``index`` names it in the error."""
    array = np.ascontiguousarray(waveform, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"waveform {index} has shape {array.shape}; expected (samples,) mono")
    return array
