"""Silero VAD (v6, 16 kHz) as the project's own module, weights from the ``silero-vad`` wheel.

Loading path: the wheel's ``silero_vad/data/silero_vad.jit`` — the model ``silero_vad.load_silero_vad()``
returns — opened with ``torch.jit.load`` only to read its tensors into the module below, whose
forward is ours. The wheel's other copies were weighed: ``silero_vad_16k.safetensors`` (data only,
the safest format) holds weights that are not the 6.x model's (conv weights differ by up to 18;
an earlier release's, presumably); the ONNX files would need onnxruntime, a new dependency. All ship in the same 11 MB wheel, so
the choice costs no install size. Owning the forward is what makes it fast: the TorchScript model
takes one 32 ms frame per call with its recurrent state kept inside it; here the convolutional
front-end of a whole block of frames runs as one batch and only the 128-unit LSTM steps through
time. The ``silero_vad`` package itself is never imported (its ``__init__`` sets
``torch.set_num_threads(1)`` for the whole process). The outputs equal the TorchScript model's own
(tests/pretrained/test_vad.py).

The network, per frame of 512 new samples (32 ms) preceded by the previous frame's last 64 samples:
reflection-pad 64 on the right -> a learned STFT (conv 256, stride 128: 4 frames of 129 bins,
magnitude) -> 4 conv+ReLU layers 129 -> 128 -> 64 (stride 2) -> 64 (stride 2) -> 128 -> an LSTM cell
of 128 carried across frames -> ReLU -> linear 128 -> 1 -> sigmoid: P(speech) for the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from agencerdas.stores.errors import AgencerdasError

from .files import package_file

SAMPLE_RATE = 16_000
HOP = 512  # samples per frame: 32 ms
CONTEXT = 64  # samples of the previous frame each frame also sees
INSTALL = "pip install --no-deps 'silero-vad>=6.2,<7'"
#: Our parameter names -> the TorchScript model's (its 16 kHz network; the file also holds an 8 kHz one).
_JIT_NAMES = {
    "stft_conv.weight": "_model.stft.forward_basis_buffer",
    **{f"conv{i + 1}.{p}": f"_model.encoder.{i}.reparam_conv.{p}" for i in range(4) for p in ("weight", "bias")},
    **{f"lstm.{p}_l0": f"_model.decoder.rnn.{p}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")},
    "final_conv.weight": "_model.decoder.decoder.2.weight",
    "final_conv.bias": "_model.decoder.decoder.2.bias",
}


@dataclass(frozen=True)
class SpeechRules:
    """Silero's ``get_speech_timestamps`` rule and defaults, for turning probabilities into regions.

    threshold: a frame at or above it starts (or continues) speech.
    neg_threshold: inside speech, frames below it count as silence (None: threshold - 0.15, >= 0.01).
    min_speech_s: regions this short or shorter are dropped (seconds).
    min_silence_s: silence must last this long to end a region (seconds).
    speech_pad_s: each region is widened by this much on both sides, or by half the gap to its
        neighbour when the gap is shorter than twice this (seconds).
    Silero's max_speech_duration_s (default infinite: never split) is not offered.
    """

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_s: float = 0.25
    min_silence_s: float = 0.1
    speech_pad_s: float = 0.03


class SileroVAD(nn.Module):
    """Speech probability every 32 ms of a 16 kHz waveform, and speech regions from it."""

    sample_rate = SAMPLE_RATE
    hop = HOP

    def __init__(self, block_frames: int = 1875):
        super().__init__()
        self.block_frames = block_frames
        self.stft_conv = nn.Conv1d(1, 258, kernel_size=256, stride=128, bias=False)
        self.conv1 = nn.Conv1d(129, 128, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(128, 64, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(64, 64, kernel_size=3, stride=2, padding=1)
        self.conv4 = nn.Conv1d(64, 128, kernel_size=3, padding=1)
        # An LSTM over the frames of a block computes exactly the LSTMCell stepped frame by frame
        # (same weights, same gate order), in one call.
        self.lstm = nn.LSTM(128, 128, batch_first=True)
        self.final_conv = nn.Conv1d(128, 1, kernel_size=1)

    @classmethod
    def load(cls, device: str | torch.device = "cpu", block_frames: int = 1875) -> "SileroVAD":
        """The pretrained model on ``device``. ``block_frames``: frames per forward (1875 = 60 s),
        which bounds memory whatever the recording's length."""
        path = package_file("silero_vad", "data/silero_vad.jit", INSTALL)
        try:
            weights = torch.jit.load(str(path), map_location="cpu").state_dict()
            model = cls(block_frames)
            model.load_state_dict({ours: weights[theirs] for ours, theirs in _JIT_NAMES.items()})
        except (RuntimeError, KeyError) as exc:
            raise AgencerdasError(f"{path}: not the Silero VAD 6 TorchScript model ({exc}); reinstall it with `{INSTALL}`") from exc
        return model.to(device).eval()

    def _block(self, samples: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, tuple]:
        """samples (64 + 512 n,): context then n frames -> ((n,) probabilities, LSTM state after them)."""
        frames = samples.unfold(0, CONTEXT + HOP, HOP).unsqueeze(1)  # (n, 1, 576)
        frames = nn.functional.pad(frames, (0, CONTEXT), mode="reflect")
        spec = self.stft_conv(frames)
        x = torch.sqrt(spec[:, :129].square() + spec[:, 129:].square())
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = torch.relu(conv(x))
        hidden, state = self.lstm(x.squeeze(-1).unsqueeze(0), state)  # (1, n, 128)
        logits = self.final_conv(torch.relu(hidden[0]).unsqueeze(-1))
        return torch.sigmoid(logits).flatten(), state

    @torch.inference_mode()
    def speech_probability(self, waveform: np.ndarray) -> np.ndarray:
        """float32 (samples,) at 16 kHz -> float32 (ceil(samples / 512),): P(speech) of each 32 ms
        frame, frame i covering samples [512 i, 512 (i + 1)) (the last one zero-padded).

        Processed in blocks of ``block_frames`` frames carrying the 64-sample context and the LSTM
        state across them: the same numbers as one pass, in memory bounded by the block.
        """
        wave = np.asarray(waveform, dtype=np.float32)
        if wave.ndim != 1:
            raise ValueError(f"waveform has shape {wave.shape}; expected (samples,) mono at 16 kHz")
        n_frames = math.ceil(len(wave) / HOP)
        device = self.final_conv.weight.device
        state = (torch.zeros(1, 1, 128, device=device), torch.zeros(1, 1, 128, device=device))
        context = torch.zeros(CONTEXT, device=device)
        out = np.empty(n_frames, np.float32)
        for first in range(0, n_frames, self.block_frames):
            block = np.zeros(min(self.block_frames, n_frames - first) * HOP, np.float32)
            piece = wave[first * HOP : first * HOP + len(block)]
            block[: len(piece)] = piece
            samples = torch.cat([context, torch.from_numpy(block).to(device)])
            probs, state = self._block(samples, state)
            out[first : first + len(probs)] = probs.cpu().numpy()
            context = samples[-CONTEXT:]
        return out

    def speech_regions(self, waveform: np.ndarray, rules: SpeechRules = SpeechRules()) -> list[tuple[float, float]]:
        """float32 (samples,) at 16 kHz -> [(start_s, end_s), ...] speech regions, in order."""
        return regions_from_probabilities(self.speech_probability(waveform), len(waveform), rules)


def regions_from_probabilities(probs: np.ndarray, n_samples: int, rules: SpeechRules = SpeechRules()) -> list[tuple[float, float]]:
    """Silero's ``get_speech_timestamps_from_probs`` (without max_speech_duration_s) in seconds,
    unrounded: hysteresis between ``threshold`` and ``neg_threshold``, silences shorter than
    ``min_silence_s`` bridged, regions of ``min_speech_s`` or less dropped, then padded.

    probs: (frames,) P(speech) per 512-sample frame; n_samples: the waveform's length.
    """
    neg = rules.neg_threshold if rules.neg_threshold is not None else max(rules.threshold - 0.15, 0.01)
    min_speech = SAMPLE_RATE * rules.min_speech_s
    min_silence = SAMPLE_RATE * rules.min_silence_s
    pad = SAMPLE_RATE * rules.speech_pad_s
    regions: list[list[int]] = []
    start: int | None = None
    silence_from = 0  # 0: no silence pending (silero's temp_end)
    for i, prob in enumerate(probs):
        sample = HOP * i
        if prob >= rules.threshold:
            silence_from = 0
            if start is None:
                start = sample
                continue
        if start is not None and prob < neg:
            silence_from = silence_from or sample
            if sample - silence_from >= min_silence:
                if silence_from - start > min_speech:
                    regions.append([start, silence_from])
                start, silence_from = None, 0
    if start is not None and n_samples - start > min_speech:
        regions.append([start, n_samples])
    for i, region in enumerate(regions):
        if i == 0:
            region[0] = int(max(0, region[0] - pad))
        if i + 1 < len(regions):
            gap = regions[i + 1][0] - region[1]
            if gap < 2 * pad:
                region[1] += int(gap // 2)
                regions[i + 1][0] = int(max(0, regions[i + 1][0] - gap // 2))
            else:
                region[1] = int(min(n_samples, region[1] + pad))
                regions[i + 1][0] = int(max(0, regions[i + 1][0] - pad))
        else:
            region[1] = int(min(n_samples, region[1] + pad))
    return [(a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in regions]
