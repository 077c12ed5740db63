"""Cheap room and channel simulation: synthetic reverberation and coloured background noise."""

from __future__ import annotations

import numpy as np
import scipy.fft
from scipy.signal import oaconvolve

# Reverberation time (RT60, time for a 60 dB decay) of ordinary rooms, in seconds.
_RT60_S = (0.2, 0.7)
# Direct-to-reverberant energy ratio in dB: close talkers to a table microphone.
_DRR_DB = (0.0, 12.0)
# Delay of the first reflection after the direct sound, in seconds.
_FIRST_REFLECTION_S = (0.002, 0.008)
# Spectral slope exponent of the noise: 0 = white, 1 = pink, 2 = brown.
_NOISE_EXPONENT = (0.5, 2.0)


def room_impulse_response(rng: np.random.Generator, sample_rate: int) -> tuple[np.ndarray, float]:
    """A synthetic room impulse response and its RT60 in seconds.

    A unit direct path at sample 0 (so speech is not delayed and the RTTM stays
    exact) followed, after a few milliseconds, by Gaussian noise decaying
    exponentially by 60 dB over RT60: the classic statistical model of a diffuse
    reverberant tail. The tail is scaled to a random direct-to-reverberant ratio.
    """
    rt60 = float(rng.uniform(*_RT60_S))
    drr_db = rng.uniform(*_DRR_DB)
    delay = int(rng.uniform(*_FIRST_REFLECTION_S) * sample_rate)
    t = np.arange(int(rt60 * sample_rate)) / sample_rate
    # Amplitude falls 60 dB (a factor 1000) over rt60: exp(-ln(1000) * t / rt60).
    tail = rng.standard_normal(t.size) * np.exp(-np.log(1000.0) * t / rt60)
    tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / np.sum(tail**2))
    response = np.zeros(delay + t.size, dtype=np.float32)
    response[0] = 1.0
    response[delay:] += tail
    return response, rt60


def reverberate(signal: np.ndarray, response: np.ndarray) -> np.ndarray:
    """``signal`` (1-D) convolved with ``response``, cut to the length of ``signal``."""
    return oaconvolve(signal, response)[: signal.size].astype(np.float32)


def coloured_noise(n_samples: int, n_channels: int, rng: np.random.Generator) -> np.ndarray:
    """Stationary noise of shape (n_samples, n_channels), power spectrum ~ 1/f^a with random a.

    White Gaussian noise shaped in the frequency domain; a between pink and brown
    resembles fans, traffic and room tone more than white noise does. Computed in
    single precision, one channel at a time, to keep a worker's peak memory low.
    """
    exponent = rng.uniform(*_NOISE_EXPONENT)
    length = scipy.fft.next_fast_len(n_samples, real=True)
    # Floor the frequency at 1e-3 cycles/sample (22 Hz at 22.05 kHz) so DC and the
    # lowest bins stay finite.
    shape = (np.maximum(np.fft.rfftfreq(length), 1e-3) ** (-exponent / 2.0)).astype(np.float32)
    noise = np.empty((n_samples, n_channels), dtype=np.float32)
    for channel in range(n_channels):
        spectrum = scipy.fft.rfft(rng.standard_normal(length, dtype=np.float32))
        spectrum *= shape
        noise[:, channel] = scipy.fft.irfft(spectrum, n=length)[:n_samples]
    return noise


def add_noise(mix: np.ndarray, speech_mask: np.ndarray, snr_db: float, rng: np.random.Generator) -> None:
    """Add coloured noise to ``mix`` (samples, channels) in place, ``snr_db`` dB below the speech power.

    Speech power is measured over the samples in ``speech_mask`` only, so long pauses
    do not lower it and the SNR means what it says while someone talks.
    """
    noise = coloured_noise(mix.shape[0], mix.shape[1], rng)
    speech = mix[speech_mask]
    speech_power = float(np.vdot(speech, speech)) / max(speech.size, 1)
    noise_power = float(np.vdot(noise, noise)) / noise.size
    noise *= np.float32(np.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0))))
    mix += noise
