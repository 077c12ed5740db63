"""Log-mel features computed block by block with exact frame alignment across block edges.

Frame ``t`` describes the base-rate interval [t * hop, (t + 1) * hop) samples; its
analysis window (``win_length`` samples) is centred on that interval. A signal of
N samples gives ceil(N / hop) frames, whatever the block size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator

import librosa
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from agencerdas.stores.errors import AgencerdasError

# Frames per FFT batch: the float64 scratch (0.8 MB at 400 samples) and its spectrum stay in
# L2 cache; one FFT over a whole 80 s block ran 5x slower (issue 17).
_SUB_BLOCK_FRAMES = 256
# OpenBLAS computes a product of fewer multiply-adds than this (2^18) on the calling thread.
_BLAS_SINGLE_THREAD_MACS = 1 << 18
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that changes stored features; all of it is part of the features key.

    Defaults: 16 kHz, 80 log-mel bins, 25 ms Hann window, 10 ms base frame shift,
    natural log with a 1e-10 power floor, stored as float16 (half the bytes of float32
    at a quantisation error far below the features' own noise; see the README).
    """

    sample_rate: int = 16000
    n_mels: int = 80
    win_length: int = 400
    hop_length: int = 160
    fmin: float = 20.0
    fmax: float = 7600.0
    log_floor: float = 1e-10
    dtype: str = "float16"

    def __post_init__(self) -> None:
        problems = []
        ints = {"sample_rate": self.sample_rate, "n_mels": self.n_mels, "win_length": self.win_length,
                "hop_length": self.hop_length}
        problems += [f"{name}={value!r} is not a positive whole number" for name, value in ints.items()
                     if not _positive_int(value)]
        if _positive_int(self.hop_length) and _positive_int(self.win_length) and self.win_length < self.hop_length:
            problems.append(f"win_length={self.win_length} is below hop_length={self.hop_length}")
        band_ok = _positive_int(self.sample_rate) and 0 <= self.fmin < self.fmax <= self.sample_rate / 2
        if not band_ok:
            problems.append(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin}, fmax={self.fmax}")
        if not math.isfinite(self.log_floor) or self.log_floor < _FLOAT32_TINY:
            # Below float32's smallest normal number the floor rounds towards 0 and log gives -inf.
            problems.append(f"log_floor={self.log_floor} must be finite (not NaN or infinity) and at least "
                            f"{_FLOAT32_TINY:.3g}, the smallest normal float32")
        if self.dtype not in ("float16", "float32"):
            problems.append(f"feature dtype must be float16 or float32, got {self.dtype!r}")
        if band_ok and _positive_int(self.n_mels) and _positive_int(self.win_length):
            problems += _mel_problems(self)
        if problems:
            raise AgencerdasError("invalid feature config: " + "; ".join(problems))

    @property
    def frame_shift_s(self) -> float:
        return self.hop_length / self.sample_rate

    def to_dict(self) -> dict:
        return asdict(self)


def _positive_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


def _mel_frequencies(n: int, fmin: float, fmax: float) -> np.ndarray:
    """``n`` band edges (Hz) evenly spaced on the Slaney mel scale: librosa's ``mel_frequencies(htk=False)``,
    the same operations, written out so that checking a config never imports librosa's heavy modules
    (a labels-only worker builds a FeatureConfig and must not pay for them)."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def to_mel(hz: float) -> float:
        return min_log_mel + np.log(hz / min_log_hz) / logstep if hz >= min_log_hz else hz / f_sp

    mels = np.linspace(to_mel(fmin), to_mel(fmax), n)
    hz = f_sp * mels
    log_part = mels >= min_log_mel
    hz[log_part] = min_log_hz * np.exp(logstep * (mels[log_part] - min_log_mel))
    return hz


def _empty_mel_filters(config: FeatureConfig, n_mels: int) -> int:
    """How many of ``n_mels`` triangular filters hold no FFT bin (a window of ``win_length`` samples).

    Filter i is non-zero exactly at the bins strictly between edges i and i + 2; an empty one is a
    constant feature column (librosa warns "Empty filters detected"), and many of them make the
    filter bank, and every product with it, needlessly large.
    """
    edges = _mel_frequencies(n_mels + 2, config.fmin, config.fmax)
    bins = np.fft.rfftfreq(config.win_length, 1.0 / config.sample_rate)
    inside = np.searchsorted(bins, edges[2:], side="left") - np.searchsorted(bins, edges[:-2], side="right")
    return int(np.count_nonzero(inside <= 0))


def _mel_problems(config: FeatureConfig) -> list[str]:
    """Why ``config.n_mels`` filters do not fit its FFT size and band (empty filters), or nothing."""
    empty = _empty_mel_filters(config, config.n_mels)
    if not empty:
        return []
    # The first count with an empty filter ends the range offered: a larger count can fit again (the
    # edges move), but every count in the range is then sure to work. Filters i and i + 2 hold
    # disjoint bins, so the count never passes twice the bins (win_length + 2).
    most = next(n for n in range(1, config.win_length + 4) if _empty_mel_filters(config, n)) - 1
    setting = f"win_length={config.win_length} at {config.sample_rate} Hz over {config.fmin:g}-{config.fmax:g} Hz"
    if not most:
        return [f"n_mels={config.n_mels}: even a single mel filter holds no FFT bin with {setting}; "
                "widen fmin-fmax or raise win_length"]
    return [f"n_mels={config.n_mels} leaves {empty} mel filter(s) empty (no FFT bin between their edges) "
            f"with {setting}; use n_mels from 1 to {most}, or a larger win_length"]


class LogMel:
    """Streaming log-mel: feed 16 kHz blocks, receive (frames, n_mels) float32 blocks.

    The same numbers as ``librosa.stft(center=False, window="hann")`` followed by the
    mel product, within float32 rounding, so stores written by either stay valid under
    one features key. librosa gives the filter bank and window, once, here; the loop calls
    none of it (librosa.stft's modules load numba ufuncs, ~0.6 s in every fresh worker).
    """

    def __init__(self, config: FeatureConfig):
        self.config = config
        mel = librosa.filters.mel(
            sr=config.sample_rate, n_fft=config.win_length, n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax
        )
        self._mel_t = np.ascontiguousarray(mel.T, dtype=np.float32)  # (win_length // 2 + 1, n_mels)
        # The window librosa.stft uses: periodic Hann (fftbins=True), float64.
        self._window = librosa.filters.get_window("hann", config.win_length, fftbins=True)
        # Left context so that frame 0's window is centred on the first hop.
        self._pad = (config.win_length - config.hop_length) // 2

    def _frames(self, signal: np.ndarray) -> np.ndarray:
        """(n, n_mels) float32 log-mel of every full window in ``signal`` (samples) at hop spacing.

        Windowing and FFT run in float64 as librosa's do: a float32 FFT's error is relative to
        a frame's largest bin, so quiet bands beside a loud one (a DC offset, a tone) would
        move by several float16 steps. Power and mel product are float32, as before.
        """
        cfg = self.config
        windows = sliding_window_view(signal, cfg.win_length)[:: cfg.hop_length]  # (n, win_length), no copy
        n = len(windows)
        bins, n_mels = self._mel_t.shape
        group = max(1, _BLAS_SINGLE_THREAD_MACS // (bins * n_mels))
        power = np.empty((-(-n // group) * group, bins), dtype=np.float32)
        power[n:] = 0.0  # padding to whole groups; its products are dropped
        rows = max(1, min(n, _SUB_BLOCK_FRAMES))
        framed = np.empty((rows, cfg.win_length), dtype=np.float64)
        for start in range(0, n, rows):
            m = min(rows, n - start)
            # A casting copy, then an in-place product: 30% faster than one mixed-type multiply.
            framed[:m] = windows[start : start + m]
            framed[:m] *= self._window
            spectrum = np.fft.rfft(framed[:m], axis=-1)  # (m, bins) complex128
            parts = spectrum.view(np.float64)  # (m, 2 * bins): re, im interleaved
            np.square(parts, out=parts)
            np.add(parts[:, 0::2], parts[:, 1::2], out=power[start : start + m])
        # A stack of small products, one numpy call: each stays on this thread. One large
        # product wakes OpenBLAS's pool, whose threads then spin on other cores for ~0.1 s,
        # doubling the CPU time of a process with the default thread count.
        mel = (power.reshape(-1, group, bins) @ self._mel_t).reshape(-1, n_mels)[:n]
        np.maximum(mel, cfg.log_floor, out=mel)
        return np.log(mel, out=mel)

    def process(self, blocks: Iterable[np.ndarray], frames_per_block: int) -> Iterator[np.ndarray]:
        """Yield log-mel blocks of exactly ``frames_per_block`` frames (the last may be shorter).

        Memory holds one input block plus one window of carry-over; the output
        equals processing the whole signal in one block.
        """
        cfg = self.config
        buffer = np.zeros(self._pad, dtype=np.float32)
        pending: list[np.ndarray] = []
        pending_frames = 0
        consumed = 0  # signal samples fed so far
        emitted = 0  # frames produced so far
        for block in blocks:
            consumed += len(block)
            buffer = np.concatenate([buffer, block])
            n = 1 + (len(buffer) - cfg.win_length) // cfg.hop_length if len(buffer) >= cfg.win_length else 0
            if n:
                pending.append(self._frames(buffer[: (n - 1) * cfg.hop_length + cfg.win_length]))
                pending_frames += n
                emitted += n
                buffer = buffer[n * cfg.hop_length :]
            while pending_frames >= frames_per_block:
                out, pending, pending_frames = _take(pending, frames_per_block)
                yield out
        total = -(-consumed // cfg.hop_length)  # ceil(N / hop) frames in all
        if total > emitted:
            needed = (total - emitted - 1) * cfg.hop_length + cfg.win_length
            tail = np.concatenate([buffer, np.zeros(max(0, needed - len(buffer)), dtype=np.float32)])
            pending.append(self._frames(tail[:needed]))
            pending_frames += total - emitted
        while pending_frames:
            out, pending, pending_frames = _take(pending, min(frames_per_block, pending_frames))
            yield out


def _take(pending: list[np.ndarray], n: int) -> tuple[np.ndarray, list[np.ndarray], int]:
    """Split the first ``n`` frames off a list of frame blocks."""
    joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
    rest = joined[n:]
    return joined[:n], ([rest] if len(rest) else []), len(rest)


def log_mel(blocks: Iterable[np.ndarray], config: FeatureConfig, frames_per_block: int = 8000) -> np.ndarray:
    """(frames, n_mels) log-mel of mono ``blocks`` at ``config.sample_rate`` in memory, in ``config.dtype``:
    the values a features entry of the store holds for the same audio."""
    out = list(LogMel(config).process(blocks, frames_per_block))
    return np.concatenate(out).astype(config.dtype) if out else np.zeros((0, config.n_mels), dtype=config.dtype)
