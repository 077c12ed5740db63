"""The interface every speaker encoder offers, and the one place that turns a name into one."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from agencerdas.stores.errors import AgencerdasError


@runtime_checkable
class SpeakerEncoder(Protocol):
    """Maps waveforms to speaker embeddings on the unit sphere (compare them by cosine).

    ``sample_rate``: the rate (Hz) that ``embed`` expects its waveforms at.
    ``dim``: the embedding size E.
    ``embed(waveforms)``: a list of N float32 arrays of shape (samples,), any lengths, at
    ``sample_rate`` -> float32 array (N, E), each row of unit L2 norm.
    """

    sample_rate: int
    dim: int

    def embed(self, waveforms: Sequence[np.ndarray]) -> np.ndarray: ...


def load_encoder(name_or_path: str | Path, device: str = "cpu") -> SpeakerEncoder:
    """``"ge2e"`` (resemblyzer's pretrained GE2E encoder) or the path of a TorchScript encoder file."""
    # Imported here so that choosing one encoder never loads the other's module.
    if str(name_or_path) == "ge2e":
        from .ge2e import GE2E

        return GE2E.load(device)
    path = Path(name_or_path)
    if not path.is_file():
        raise AgencerdasError(
            f"{path}: no such file; an embedding source is 'ge2e' or the path of a TorchScript "
            "speaker encoder (waveform (B, samples) at 16 kHz -> (B, E); see docs/pretrained.md)"
        )
    from .torchscript import TorchScriptEncoder

    return TorchScriptEncoder.load(path, device)
