"""The strided, batched-FFT log-mel equals the librosa.stft path that wrote existing stores.

Stored features are float16 and their key does not change with the implementation, so the
new path must agree with the old one within float16 rounding: ``rtol = 2**-11`` is float16's
unit roundoff (what storing a value changes it by at most), and ``atol = 2**-20`` covers
log values near 0, where float32 arithmetic alone is coarser than float16's spacing.
"""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from agencerdas.pipeline.audio import mix_to_mono, stream_mono
from agencerdas.pipeline.features import FeatureConfig, LogMel
from tests.fresh import loaded_by

FLOAT16_RTOL = 2.0**-11
FLOAT32_LOG_ATOL = 2.0**-20


def reference_logmel(x: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """(ceil(N / hop), n_mels) log-mel of ``x`` computed as the librosa-based LogMel did.

    Its streaming equals one librosa.stft (center=False) over the signal with
    (win - hop) // 2 zeros in front and zeros behind up to the last frame's window.
    """
    hop, win = config.hop_length, config.win_length
    frames = -(-len(x) // hop)
    padded = np.zeros((frames - 1) * hop + win, dtype=np.float32)
    pad = (win - hop) // 2
    padded[pad : pad + len(x)] = x[: len(padded) - pad]
    spec = librosa.stft(padded, n_fft=win, hop_length=hop, window="hann", center=False)
    power = spec.real**2 + spec.imag**2
    mel_basis = librosa.filters.mel(
        sr=config.sample_rate, n_fft=win, n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax
    ).astype(np.float32)
    mel = mel_basis @ power
    np.maximum(mel, config.log_floor, out=mel)
    return np.log(mel, out=mel).T


def streamed(x: np.ndarray, config: FeatureConfig, block: int, frames_per_block: int) -> np.ndarray:
    blocks = [x[i : i + block] for i in range(0, len(x), block)]
    out = list(LogMel(config).process(blocks, frames_per_block))
    assert all(len(b) == frames_per_block for b in out[:-1])
    assert all(b.dtype == np.float32 and b.flags.c_contiguous for b in out)
    return np.concatenate(out)


def speechlike(n: int, seed: int = 0) -> np.ndarray:
    """Modulated harmonics plus noise, quantised to 16 bits like a decoded recording."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    voiced = sum(np.sin(2 * np.pi * 180 * k * t) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    x = 0.2 * voiced + 0.01 * rng.standard_normal(n)
    return (np.round(x * 32767) / 32768).astype(np.float32)


@pytest.mark.parametrize("n", [1, 100, 159, 160, 161, 399, 400, 401, 559, 560, 16001, 31337])
@pytest.mark.parametrize("block, frames_per_block", [(10**9, 10**9), (1000, 7), (160, 1), (401, 64), (7919, 8000)])
def test_matches_librosa_stft_reference_within_float16_rounding(n, block, frames_per_block):
    config = FeatureConfig()
    x = speechlike(n)
    expected = reference_logmel(x, config)
    got = streamed(x, config, block, frames_per_block)
    assert got.shape == expected.shape == (-(-n // 160), 80)
    np.testing.assert_allclose(got, expected, rtol=FLOAT16_RTOL, atol=FLOAT32_LOG_ATOL)


@pytest.mark.parametrize(
    "config",
    [
        FeatureConfig(n_mels=40),
        FeatureConfig(win_length=512, hop_length=128, n_mels=64, fmin=0.0, fmax=8000.0),
        FeatureConfig(sample_rate=8000, win_length=201, hop_length=80, n_mels=23, fmax=4000.0),
    ],
)
def test_matches_reference_for_other_configs(config):
    x = speechlike(12_345, seed=3)
    np.testing.assert_allclose(
        streamed(x, config, 3000, 50), reference_logmel(x, config), rtol=FLOAT16_RTOL, atol=FLOAT32_LOG_ATOL
    )


def test_quiet_bands_beside_loud_ones_match():
    # A float32 FFT's error scales with a frame's largest bin: beside a DC offset or a loud
    # sweep the quiet bands moved by 1.1 to 7.5 times this tolerance (numpy's and scipy's
    # float32 FFTs). The float64 FFT stays within a hundredth of it.
    rng = np.random.default_rng(1)
    t = np.arange(16000) / 16000
    signals = {
        "dc offset over quiet noise": 0.9 + 1e-5 * rng.standard_normal(len(t)),
        "loud sweep": 0.9 * scipy.signal.chirp(t, 20, t[-1], 7900),
        "full-scale square wave": np.sign(np.sin(2 * np.pi * 100 * t)),
    }
    config = FeatureConfig()
    for name, x in signals.items():
        x = x.astype(np.float32)
        np.testing.assert_allclose(
            streamed(x, config, 4000, 1000), reference_logmel(x, config),
            rtol=FLOAT16_RTOL, atol=FLOAT32_LOG_ATOL, err_msg=name,
        )


def test_feature_loop_does_not_load_librosa_stft():
    # librosa.stft's modules load numba ufuncs, ~0.6 s in every fresh worker process.
    code = (
        "import numpy as np\n"
        "from pipeline.features import FeatureConfig, LogMel\n"
        "list(LogMel(FeatureConfig()).process([np.ones(20000, np.float32)], 64))\n"
    )
    assert loaded_by(code, ("librosa.core.spectrum", "librosa.core.audio"))[0] == []


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_mix_to_mono_is_the_channel_mean(channels):
    rng = np.random.default_rng(channels)
    block = rng.uniform(-1, 1, size=(4801, channels)).astype(np.float32)
    expected = block.mean(axis=1, dtype=np.float32)
    mono = mix_to_mono(block)
    assert mono.dtype == np.float32 and mono.shape == (4801,) and mono.flags.c_contiguous
    if channels <= 2:
        np.testing.assert_array_equal(mono, expected)
    else:
        np.testing.assert_allclose(mono, expected, rtol=1e-6, atol=1e-7)
    assert np.shares_memory(mono, block) == (channels == 1)
    assert len(mix_to_mono(block[:0])) == 0


@pytest.mark.parametrize("fmt, channels", [("wav", 1), ("wav", 2), ("flac", 1), ("flac", 2)])
def test_16_bit_pcm_decodes_to_libsndfiles_floats(tmp_path, fmt, channels):
    # 16-bit files take the int16 read; the samples must be libsndfile's float32 ones, mixed as before.
    pcm = np.random.default_rng(channels).integers(-32768, 32768, size=(30_000, channels), dtype=np.int16)
    pcm[:2] = [[-32768], [32767]]
    path = tmp_path / f"x.{fmt}"
    sf.write(path, pcm, 16000, subtype="PCM_16")
    expected = sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1, dtype=np.float32)
    got = np.concatenate(list(stream_mono(path, 16000, block_seconds=0.7)))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


def test_stream_mono_mixes_three_channels_to_their_mean(tmp_path):
    data = np.random.default_rng(7).uniform(-0.5, 0.5, size=(20_000, 3)).astype(np.float32)
    path = tmp_path / "three.wav"
    sf.write(path, data, 16000, subtype="FLOAT")
    out = np.concatenate(list(stream_mono(path, 16000, block_seconds=0.3)))
    np.testing.assert_allclose(out, data.mean(axis=1), rtol=1e-6, atol=1e-7)
