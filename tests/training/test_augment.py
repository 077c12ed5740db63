"""Feature-domain augmentation: what each perturbation does to a log-mel window, and its seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agencerdas.training.augment import Augment

N_MELS = 80


def _envelope(peak: int, frames: int = 30) -> np.ndarray:
    """Log-mel frames (frames, N_MELS) with one formant-like peak at bin ``peak``."""
    bins = np.arange(N_MELS)
    return np.tile(-10.0 + 8.0 * np.exp(-0.5 * ((bins - peak) / 4.0) ** 2), (frames, 1)).astype(np.float16)


def test_without_ranges_nothing_changes():
    feats = _envelope(30)
    augment = Augment()
    assert not augment.active
    out = augment.mask(augment.spectral(feats, np.random.default_rng(0)), np.random.default_rng(0))
    np.testing.assert_array_equal(out, feats.astype(np.float32))


def test_warp_moves_the_peak_by_the_stretch_factor_and_keeps_the_shape():
    feats = _envelope(40)
    moved = set()
    for seed in range(20):
        alpha = np.random.default_rng(seed).uniform(0.85, 1.15)  # the first draw is the stretch
        out = Augment(warp=0.15).spectral(feats, np.random.default_rng(seed))
        peak = int(out[0].argmax())
        assert abs(peak - 40 / alpha) <= 1.0
        assert out.shape == feats.shape and out.max() == pytest.approx(feats.max(), abs=0.3)
        np.testing.assert_array_equal(out, np.tile(out[0], (len(out), 1)))  # every frame alike: time untouched
        moved.add(peak)
    assert len(moved) >= 5


def test_gain_shifts_every_bin_by_the_same_decibels():
    feats = _envelope(30)
    offsets = []
    for seed in range(20):
        diff = Augment(gain_db=6.0).spectral(feats, np.random.default_rng(seed)) - feats.astype(np.float32)
        np.testing.assert_allclose(diff, diff[0, 0], atol=1e-5)
        offsets.append(diff[0, 0] / (math.log(10) / 10))  # back to dB
    assert max(np.abs(offsets)) <= 6.0 + 1e-4 and np.ptp(offsets) > 4.0


def test_tilt_is_a_linear_slope_centred_on_the_band():
    feats = _envelope(30)
    diff = Augment(tilt_db=10.0).spectral(feats, np.random.default_rng(3)) - feats.astype(np.float32)
    slope = np.diff(diff[0])
    np.testing.assert_allclose(slope, slope[0], atol=1e-5)
    assert abs(slope[0]) > 0 and diff[0].mean() == pytest.approx(0.0, abs=1e-5)
    assert abs(diff[0, -1] - diff[0, 0]) <= 10.0 * math.log(10) / 10 + 1e-5


def test_frequency_masks_zero_at_most_their_bands():
    rng = np.random.default_rng(0)
    for seed in range(30):
        feats = rng.standard_normal((20, N_MELS)).astype(np.float32) + 5.0  # normalised features never exactly 0
        out = Augment(freq_masks=2, mask_bins=8).mask(feats.copy(), np.random.default_rng(seed))
        zeroed = np.flatnonzero((out == 0).all(axis=0))
        assert len(zeroed) <= 16
        np.testing.assert_array_equal(np.delete(out, zeroed, axis=1), np.delete(feats, zeroed, axis=1))
        assert not (out[:, zeroed] != 0).any()


def test_the_same_seed_gives_the_same_perturbation():
    feats = np.random.default_rng(1).standard_normal((50, N_MELS)).astype(np.float32)
    augment = Augment(warp=0.1, gain_db=6, tilt_db=6, freq_masks=2, mask_bins=8)

    def run(seed):
        rng = np.random.default_rng(seed)
        return augment.mask(augment.spectral(feats, rng), rng)

    np.testing.assert_array_equal(run(5), run(5))
    assert not np.array_equal(run(5), run(6))


def test_a_stretch_per_row_is_the_window_warp_of_each_row_s_factor():
    import torch

    from agencerdas.training.augment import Draw, spectral_batch, stretch_rows

    rows = torch.from_numpy(np.stack([_envelope(peak, 1)[0] for peak in (20, 40, 60)]).astype(np.float32))
    alphas = torch.tensor([0.8, 1.0, 1.15])
    got = stretch_rows(rows, alphas)
    for r, alpha in enumerate(alphas.tolist()):
        want = spectral_batch(rows[r][None, None], [Draw(alpha=alpha)])[0, 0]
        torch.testing.assert_close(got[r], want, rtol=1e-5, atol=1e-5)
    assert abs(int(got[0].argmax()) - 20 / 0.8) <= 1.0 and torch.equal(got[1], rows[1])
