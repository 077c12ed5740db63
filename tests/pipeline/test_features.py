"""Decoding and block-wise log-mel: block edges are invisible, frame counts exact."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import probe, stream_mono
from pipeline.features import FeatureConfig, LogMel
from stores.errors import AgencerdasError

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
