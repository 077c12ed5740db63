"""Resemblyzer's GE2E speaker encoder as the project's own module, with its own front-end.

The network (Wan et al., "Generalized end-to-end loss for speaker verification", 2018, as trained
by resemblyzer on LibriSpeech, VoxCeleb 1 and 2): a 3-layer LSTM 40 -> 256 over 40-band mel power
frames, a linear 256 -> 256 on the last layer's final hidden state, ReLU, L2 norm. The weights come
from the ``resemblyzer`` wheel's ``pretrained.pt`` (a dict with ``model_state``) read with
``torch.load(weights_only=True)``: tensors only, no code from the file runs, and the ``resemblyzer``
package itself is never imported (its ``__init__`` needs ``webrtcvad``).

The front-end is resemblyzer's, step for step, so the embeddings are its embeddings:

* loudness: a waveform quieter than -30 dBFS (RMS) is scaled up to it, never down — the
  ``normalize_volume(..., increase_only=True)`` of resemblyzer's ``preprocess_wav`` (its other step,
  trimming long silences with webrtcvad, is the caller's VAD's job here);
* mel power frames (not log): 16 kHz, 25 ms Hann window (400 samples), 10 ms hop (160), centred
  with zero padding, 40 Slaney mel bands — ``librosa.feature.melspectrogram``'s defaults;
* partial utterances of 160 frames (1.6 s) every 77 frames (1.3 per second); the last one is kept
  only if at least 75 % of it is covered by audio, and an input shorter than one partial is
  zero-padded to one; each partial's unit embedding is averaged over the input and the mean is
  L2-normalised — ``VoiceEncoder.embed_utterance``'s rule.

``embed`` runs all partials of all inputs through the LSTM in batches of ``batch_size`` (one
forward per batch), holding at most one batch of partial spectrograms at a time.
"""

from __future__ import annotations

import math
import pickle
from typing import Iterator, Sequence

import librosa
import numpy as np
import torch
from torch import nn

from agencerdas.stores.errors import AgencerdasError

from .arrays import as_waveform, unit_rows
from .files import package_file

SAMPLE_RATE = 16_000
N_FFT = 400  # 25 ms window
HOP = 160  # 10 ms hop
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s per partial utterance
PARTIAL_STEP = round(SAMPLE_RATE / 1.3 / HOP)  # 77 frames: embed_utterance's rate of 1.3 partials per second
MIN_COVERAGE = 0.75
TARGET_RMS = 10 ** (-30 / 20)  # -30 dBFS as a float-sample RMS
INSTALL = "pip install --no-deps resemblyzer==0.1.4"


def partial_starts(n_samples: int) -> list[int]:
    """First mel frame of each 160-frame partial utterance of an ``n_samples`` input
    (``VoiceEncoder.compute_partial_slices`` at rate 1.3, min_coverage 0.75)."""
    n_frames = math.ceil((n_samples + 1) / HOP)
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + PARTIAL_STEP + 1), PARTIAL_STEP))
    coverage = (n_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts.pop()
    return starts


def raise_quiet(waveform: np.ndarray) -> np.ndarray:
    """``waveform`` scaled up to -30 dBFS RMS if it is quieter; louder or silent ones unchanged."""
    rms = float(np.sqrt(np.mean(np.square(waveform, dtype=np.float64)))) if waveform.size else 0.0
    return waveform * np.float32(TARGET_RMS / rms) if 0.0 < rms < TARGET_RMS else waveform


class GE2E(nn.Module):
    """GE2E speaker encoder: 16 kHz waveforms -> 256-d unit embeddings (a ``SpeakerEncoder``)."""

    sample_rate = SAMPLE_RATE
    dim = 256

    def __init__(self, batch_size: int = 128):
        super().__init__()
        self.batch_size = batch_size
        self.lstm = nn.LSTM(N_MELS, 256, num_layers=3, batch_first=True)
        self.linear = nn.Linear(256, self.dim)
        mel = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS)
        self.register_buffer("mel_basis", torch.from_numpy(mel.astype(np.float32)), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    @classmethod
    def load(cls, device: str | torch.device = "cpu", batch_size: int = 128) -> "GE2E":
        """The pretrained encoder on ``device``, in eval mode. ``batch_size``: partials per LSTM
        forward (128 partials hold about 40 MB of activations)."""
        path = package_file("resemblyzer", "pretrained.pt", INSTALL)
        encoder = cls(batch_size)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
            # The checkpoint also holds the GE2E loss's similarity scale and bias: not part of the encoder.
            encoder.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity_")})
        except (RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as exc:
            # torch's own message suggests turning the weights-only load off, which lets the file run code: the
            # one thing never to do here, so its text is left out.
            raise AgencerdasError(f"{path}: not resemblyzer's GE2E weights (torch.load or the parameters failed: "
                                  f"{type(exc).__name__}); reinstall it with `{INSTALL}`") from exc
        return encoder.to(device).eval()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """mels (B, 160, 40) mel power frames -> (B, 256) unit embeddings of the partials."""
        _, (hidden, _) = self.lstm(mels)
        return nn.functional.normalize(torch.relu(self.linear(hidden[-1])), dim=1)

    def mel_frames(self, waveform: torch.Tensor) -> torch.Tensor:
        """waveform (samples,) -> (samples // 160 + 1, 40) mel power frames."""
        spec = torch.stft(waveform, N_FFT, HOP, window=self.window, center=True, pad_mode="constant", return_complex=True)
        return (self.mel_basis @ spec.abs().square()).T

    def _partials(self, waveforms: list[np.ndarray]) -> Iterator[tuple[int, torch.Tensor]]:
        """(input index, (160, 40) mel frames) for every partial utterance of every input."""
        device = self.window.device
        for index, waveform in enumerate(waveforms):
            starts = partial_starts(len(waveform))
            padded = np.zeros(max(len(waveform), (starts[-1] + PARTIAL_FRAMES) * HOP), np.float32)
            padded[: len(waveform)] = raise_quiet(waveform)
            mel = self.mel_frames(torch.from_numpy(padded).to(device))
            for start in starts:
                yield index, mel[start : start + PARTIAL_FRAMES]

    @torch.inference_mode()
    def embed(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """N float32 waveforms (samples,) at 16 kHz, any lengths -> float32 (N, 256) unit embeddings."""
        waves = [as_waveform(waveform, index) for index, waveform in enumerate(waveforms)]
        sums = np.zeros((len(waves), self.dim), np.float64)
        owners: list[int] = []
        batch: list[torch.Tensor] = []
        for index, mel in self._partials(waves):
            owners.append(index)
            batch.append(mel)
            if len(batch) == self.batch_size:
                np.add.at(sums, owners, self(torch.stack(batch)).cpu().numpy())
                owners, batch = [], []
        if batch:
            np.add.at(sums, owners, self(torch.stack(batch)).cpu().numpy())
        return unit_rows(sums)
