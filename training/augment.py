"""Feature-domain augmentation of training windows, for speakers and channels never seen in training.

A simulated (or small real) corpus has few timbres, and an EEND model learns to
detect *those* voices. The perturbations here act on stored log-mel windows, so
nothing is decoded again:

* **mel warp** (VTLP-like, Jaitly & Hinton 2013): the mel axis is stretched by a
  factor in [1 - warp, 1 + warp], moving formants up or down as a longer or
  shorter vocal tract would;
* **gain** and **spectral tilt**: a level offset and a linear slope across the
  band, in dB, as a different microphone, distance or voice effort would give;
* **frequency masks** (SpecAugment, Park et al. 2019): bands of up to
  ``mask_bins`` mel bins set to the mean of the normalised features (zero).

Labels are untouched: none of these changes who speaks when. The random draws
come from a per-window seed chosen by the epoch plan, so a resumed run sees the
same perturbations as an uninterrupted one, whichever worker reads the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: ln(power) per dB: log-mel features are natural logs of power.
_LN_PER_DB = math.log(10.0) / 10.0


@dataclass(frozen=True)
class Augment:
    """Perturbation ranges; a zero disables that perturbation."""

    warp: float = 0.0
    gain_db: float = 0.0
    tilt_db: float = 0.0
    freq_masks: int = 0
    mask_bins: int = 0

    @property
    def active(self) -> bool:
        return bool(self.warp or self.gain_db or self.tilt_db or (self.freq_masks and self.mask_bins))

    def spectral(self, feats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Warped, gained and tilted copy of raw log-mel ``feats`` (frames, n_mels), float32."""
        feats = np.asarray(feats, dtype=np.float32)
        n_mels = feats.shape[1]
        bins = np.arange(n_mels, dtype=np.float32)
        if self.warp:
            # Output bin i reads the input at i * alpha (linear interpolation, clamped at the top bin).
            pos = np.minimum(bins * rng.uniform(1.0 - self.warp, 1.0 + self.warp), n_mels - 1)
            low = pos.astype(np.int64)
            high = np.minimum(low + 1, n_mels - 1)
            frac = (pos - low).astype(np.float32)
            feats = feats[:, low] * (1.0 - frac) + feats[:, high] * frac
        offset_db = rng.uniform(-self.gain_db, self.gain_db) if self.gain_db else 0.0
        if self.tilt_db:
            offset_db = offset_db + rng.uniform(-self.tilt_db, self.tilt_db) * (bins / max(1, n_mels - 1) - 0.5)
        if np.any(offset_db):
            feats = feats + np.float32(_LN_PER_DB) * np.asarray(offset_db, dtype=np.float32)
        return feats

    def mask(self, feats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``feats`` (frames, n_mels), normalised, with ``freq_masks`` bands set to zero in place."""
        n_mels = feats.shape[1]
        width_max = min(self.mask_bins, n_mels)
        for _ in range(self.freq_masks if width_max else 0):
            width = int(rng.integers(0, width_max + 1))
            start = int(rng.integers(0, n_mels - width + 1))
            feats[:, start : start + width] = 0.0
        return feats
