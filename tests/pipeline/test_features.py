"""Decoding and block-wise log-mel: block edges are invisible, frame counts exact."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from agencerdas.pipeline.audio import probe, stream_mono
from agencerdas.pipeline.features import FeatureConfig, LogMel
from agencerdas.stores.errors import AgencerdasError

CONFIG = FeatureConfig(n_mels=40)


def signal(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def blocks_of(x: np.ndarray, sizes) -> list[np.ndarray]:
    out, start, i = [], 0, 0
    while start < len(x):
        size = sizes[i % len(sizes)]
        out.append(x[start : start + size])
        start, i = start + size, i + 1
    return out


def whole(x: np.ndarray, config: FeatureConfig = CONFIG) -> np.ndarray:
    return np.concatenate(list(LogMel(config).process([x], 10**9)))


@pytest.mark.parametrize("n", [16000, 16001, 16159, 16160, 16161, 100, 1, 400, 559])
def test_frame_count_is_ceil_of_samples_over_hop(n):
    feats = whole(signal(1.1)[:n])
    assert feats.shape == (-(-n // 160), 40)
    assert feats.dtype == np.float32 and np.isfinite(feats).all()


def test_blocks_and_frames_per_block_do_not_change_the_result():
    x = signal(2.0)[:31_337]
    reference = whole(x)
    for sizes, frames_per_block in [([1000], 7), ([17, 160, 399, 1601], 3), ([160], 1), ([5000, 1], 50), ([len(x)], 13)]:
        out = list(LogMel(CONFIG).process(blocks_of(x, sizes), frames_per_block))
        assert all(len(block) == frames_per_block for block in out[:-1]), sizes
        assert 0 < len(out[-1]) <= frames_per_block
        np.testing.assert_allclose(np.concatenate(out), reference, rtol=1e-5, atol=1e-4, err_msg=str(sizes))


def test_frame_is_centred_on_its_hop():
    # A click at sample s belongs to frame s // hop: that frame's window is centred on it.
    x = np.zeros(4000, dtype=np.float32)
    x[1234] = 1.0
    feats = whole(x)
    assert int(np.argmax(feats.mean(axis=1))) == 1234 // 160


def test_no_samples_gives_no_frames():
    assert list(LogMel(CONFIG).process([], 100)) == []
    assert list(LogMel(CONFIG).process([np.zeros(0, np.float32)], 100)) == []


def test_stream_mono_block_size_is_invisible_for_resampled_stereo(tmp_path):
    left, right = signal(1.5, 22050, seed=1), signal(1.5, 22050, seed=2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 22050, subtype="FLOAT")
    small = list(stream_mono(path, 16000, block_seconds=0.01))
    large = list(stream_mono(path, 16000, block_seconds=60.0))
    assert len(small) > 10 and len(large) == 1
    a, b = np.concatenate(small), np.concatenate(large)
    assert abs(len(a) - len(left) * 16000 / 22050) <= 1 and len(a) == len(b)
    np.testing.assert_allclose(a, b, atol=1e-5)
    exact = np.concatenate(list(stream_mono(path, 16000, block_seconds=0.5)))  # 3 whole blocks, then EOF
    np.testing.assert_allclose(exact, b, atol=1e-5)
    # the mono mix is the channel mean, resampled
    direct = np.concatenate(list(stream_mono(path, 22050, block_seconds=0.5)))
    np.testing.assert_allclose(direct, (left + right) / 2, atol=1e-6)


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.parametrize("rate, channels, fmt", [(8000, 1, "wav"), (48000, 2, "wav"), (48000, 2, "flac"), (11025, 1, "ogg")])
def test_decoding_other_rates_and_channels(tmp_path, rate, channels, fmt):
    tone = signal(1.0, rate)
    data = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    path = tmp_path / f"x.{fmt}"
    sf.write(path, data, rate)
    info = probe(path)
    assert (info.sample_rate, info.channels) == (rate, channels)
    assert info.duration_s == pytest.approx(1.0, abs=0.01)
    out = np.concatenate(list(stream_mono(path, 16000, block_seconds=0.1)))
    assert out.dtype == np.float32
    assert abs(len(out) - 16000 * info.frames / rate) <= 1
    assert dominant_frequency(out, 16000) == pytest.approx(440, abs=3)
    feats = np.concatenate(list(LogMel(CONFIG).process([out], 64)))
    assert feats.shape == (-(-len(out) // 160), 40) and np.isfinite(feats).all()


def test_undecodable_and_empty_files_are_errors_naming_the_file(tmp_path):
    garbage = tmp_path / "noise.wav"
    garbage.write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(AgencerdasError, match=r"noise\.wav: cannot decode audio"):
        probe(garbage)
    header_only = tmp_path / "header.wav"
    sf.write(header_only, np.zeros(0, np.float32), 16000)
    with pytest.raises(AgencerdasError, match=r"header\.wav: no audio samples"):
        list(stream_mono(header_only, 16000, 1.0))


def test_non_finite_samples_are_an_error(tmp_path):
    x = signal(0.5)
    x[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AgencerdasError, match="NaN or infinity"):
        list(stream_mono(path, 16000, 1.0))


def test_invalid_feature_configs_are_refused():
    for kwargs in [{"hop_length": 0}, {"win_length": 100}, {"fmax": 9000.0}, {"fmin": 8000.0}, {"dtype": "int8"}]:
        with pytest.raises(AgencerdasError, match="feature"):
            FeatureConfig(**kwargs)


def test_finite_samples_far_beyond_full_scale_are_refused_by_name_and_loud_ones_kept(tmp_path):
    """1e30 is finite, so the NaN check passed it, but its float32 power spectrum overflows and the
    features were NaN (issue 21). In stereo the two channels cancel in the mono mix, so the check
    must look before mixing. Float files beyond full scale (here integer-scaled, ±32768) are odd
    but usable: they keep their features, unchanged."""
    x = signal(0.5)
    huge = x.copy()
    huge[4000:4400] = 1e30
    for name, samples in (("huge.wav", huge), ("huge_stereo.wav", np.stack([huge, -huge], axis=1))):
        sf.write(tmp_path / name, samples, 16000, subtype="FLOAT")
        with pytest.raises(AgencerdasError, match=rf"{name}: samples reach 1e\+30, far beyond full scale ±1"):
            list(stream_mono(tmp_path / name, 16000, 1.0))
    loud = x * 32768
    sf.write(tmp_path / "loud.wav", loud, 16000, subtype="FLOAT")
    feats = whole(np.concatenate(list(stream_mono(tmp_path / "loud.wav", 16000, 1.0))))
    assert np.isfinite(feats).all()
    np.testing.assert_array_equal(feats, whole(loud))


def test_feature_config_problems_are_listed_in_one_message():
    with pytest.raises(AgencerdasError) as info:
        FeatureConfig(n_mels=0, hop_length=0, dtype="int8", log_floor=0.0)
    message = str(info.value)
    assert message.startswith("invalid feature config: ")
    for word in ("n_mels=0", "hop_length=0", "'int8'", "log_floor=0.0"):
        assert word in message, message
    with pytest.raises(AgencerdasError, match="n_mels=2.5 is not a positive whole number"):
        FeatureConfig(n_mels=2.5)


@pytest.mark.parametrize("log_floor", [0.0, 1e-45, float("inf")])
def test_a_log_floor_that_log_cannot_take_finitely_is_refused(log_floor):
    # 1e-45 is a float32 subnormal and 0: log would give -inf for every silent bin
    with pytest.raises(AgencerdasError, match="log_floor"):
        FeatureConfig(log_floor=log_floor)


def test_n_mels_is_bounded_by_filters_the_fft_size_can_fill():
    """No mel filter may be empty (librosa warns, and 5000 of them made features 90x slower)."""
    with pytest.raises(AgencerdasError, match="n_mels=5000 leaves .* empty .*use n_mels from 1 to 149") as info:
        FeatureConfig(n_mels=5000)
    assert "win_length=400 at 16000 Hz over 20-7600 Hz" in str(info.value)
    with pytest.raises(AgencerdasError, match="from 1 to 149"):
        FeatureConfig(n_mels=150)
    with pytest.raises(AgencerdasError, match="even a single mel filter"):
        FeatureConfig(fmin=7590.0, fmax=7600.0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # librosa's "Empty filters detected" would fail here
        for n_mels in (1, 80, 149):
            LogMel(FeatureConfig(n_mels=n_mels))
        LogMel(FeatureConfig(win_length=1024, hop_length=160, fmin=0.0, n_mels=378))
    with pytest.raises(AgencerdasError, match="from 1 to 378"):
        FeatureConfig(win_length=1024, hop_length=160, fmin=0.0, n_mels=379)
