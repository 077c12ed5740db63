"""A user's own speaker encoder, saved as TorchScript, behind the ``SpeakerEncoder`` interface.

The file's contract (docs/pretrained.md shows how to export WeSpeaker and pyannote models to it):
``forward(waveforms: Tensor) -> Tensor`` taking float32 (B, samples) mono waveforms at 16 kHz,
amplitudes in [-1, 1], and returning float32 (B, E) embeddings, E fixed, compared by cosine (they
need not be normalised: ``embed`` does it). The model does its own front-end (filterbanks, mean
normalisation) inside ``forward``.

How ``embed`` feeds it, since one forward takes equal-length waveforms and no mask:

* inputs of equal length go through together (at most ``batch_size`` per forward), unpadded, so
  the model sees exactly each input's samples;
* an input shorter than ``min_seconds`` (default 0.5 s) is repeated end to end up to that length
  (as WeSpeaker pads short utterances): silence padding would dilute the embedding;
* an input longer than ``max_seconds`` (default 10 s) is cut into the fewest consecutive pieces of
  at most that length, all equal to within one sample; the pieces' unit embeddings are averaged
  and renormalised (as GE2E averages its partials), which bounds memory per forward.

``torch.jit.load`` runs the TorchScript code in the file: load only encoders you trust.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from agencerdas.stores.errors import AgencerdasError

from .arrays import as_waveform, unit_rows

SAMPLE_RATE = 16_000
EXPORT_HELP = "export it with torch.jit.script or torch.jit.trace and torch.jit.save (docs/pretrained.md)"


class TorchScriptEncoder:
    """A TorchScript file ``(B, samples) at 16 kHz -> (B, E)`` as a ``SpeakerEncoder``."""

    sample_rate = SAMPLE_RATE

    def __init__(self, path: Path, module: torch.jit.ScriptModule, dim: int, device: torch.device, *,
                 min_seconds: float = 0.5, max_seconds: float = 10.0, batch_size: int = 64):
        self.path = path
        self.module = module
        self.dim = dim
        self.device = device
        self.min_samples = int(min_seconds * SAMPLE_RATE)
        self.max_samples = int(max_seconds * SAMPLE_RATE)
        self.batch_size = batch_size

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", **options) -> "TorchScriptEncoder":
        """Load ``path`` onto ``device`` and check it on a dummy batch (2, 1 s): (2, E) finite
        output, E >= 1; any failure is an AgencerdasError naming the file. ``options``: the
        constructor's ``min_seconds``, ``max_seconds``, ``batch_size``."""
        path = Path(path)
        device = torch.device(device)
        try:
            module = torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError) as exc:
            raise AgencerdasError(f"{path}: not a TorchScript file ({exc}); {EXPORT_HELP}") from exc
        dummy = 0.1 * torch.randn(2, SAMPLE_RATE, generator=torch.Generator().manual_seed(0))
        try:
            with torch.inference_mode():
                out = module(dummy.to(device))
        except Exception as exc:  # the user's code may raise anything: report it against the file
            raise AgencerdasError(
                f"{path}: forward on a (2, 16000) waveform batch failed ({type(exc).__name__}: {exc}); "
                "the encoder must map float32 (B, samples) at 16 kHz to (B, E)"
            ) from exc
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2 or out.shape[1] < 1:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise AgencerdasError(f"{path}: returned {shape} for a (2, 16000) waveform batch; expected (2, E)")
        if not torch.isfinite(out).all():
            raise AgencerdasError(f"{path}: returned non-finite values for a (2, 16000) waveform batch")
        return cls(path, module, int(out.shape[1]), device, **options)

    def _pieces(self, waveform: np.ndarray) -> list[np.ndarray]:
        """The equal-length inputs that one waveform is fed as (see the module docstring)."""
        if len(waveform) < self.min_samples:
            return [np.resize(waveform, self.min_samples) if len(waveform) else np.zeros(self.min_samples, np.float32)]
        return np.array_split(waveform, math.ceil(len(waveform) / self.max_samples))

    @torch.inference_mode()
    def embed(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """N float32 waveforms (samples,) at 16 kHz, any lengths -> float32 (N, E) unit embeddings."""
        by_length: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)
        for index, waveform in enumerate(waveforms):
            for piece in self._pieces(as_waveform(waveform, index)):
                by_length[len(piece)].append((index, piece))
        sums = np.zeros((len(waveforms), self.dim), np.float64)
        for group in by_length.values():
            for first in range(0, len(group), self.batch_size):
                owners, pieces = zip(*group[first : first + self.batch_size])
                out = self.module(torch.from_numpy(np.stack(pieces)).to(self.device))
                if tuple(out.shape) != (len(pieces), self.dim):
                    raise AgencerdasError(
                        f"{self.path}: returned {tuple(out.shape)} for {len(pieces)} waveforms of "
                        f"{len(pieces[0])} samples; expected ({len(pieces)}, {self.dim})"
                    )
                np.add.at(sums, list(owners), unit_rows(out.float().cpu().numpy()))
        return unit_rows(sums)
