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
import torch

#: ln(power) per dB: log-mel features are natural logs of power.
_LN_PER_DB = math.log(10.0) / 10.0


@dataclass(frozen=True)
class Draw:
    """One window's perturbation, drawn on the host from its seed: applied the same way to a
    window in a loader worker and to a batch gathered on the device."""

    alpha: float = 1.0  # mel-axis stretch factor
    gain_db: float = 0.0
    tilt_db: float = 0.0
    masks: tuple[tuple[int, int], ...] = ()  # (first bin, width) of each frequency mask


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

    def draw(self, rng: np.random.Generator, n_mels: int) -> Draw:
        """Every random choice of one window, in the order the perturbations apply (warp, gain,
        tilt, then the masks), so a window's seed gives the same perturbation on every data path."""
        alpha = float(rng.uniform(1.0 - self.warp, 1.0 + self.warp)) if self.warp else 1.0
        gain = float(rng.uniform(-self.gain_db, self.gain_db)) if self.gain_db else 0.0
        tilt = float(rng.uniform(-self.tilt_db, self.tilt_db)) if self.tilt_db else 0.0
        masks = []
        width_max = min(self.mask_bins, n_mels)
        for _ in range(self.freq_masks if width_max else 0):
            width = int(rng.integers(0, width_max + 1))
            masks.append((int(rng.integers(0, n_mels - width + 1)), width))
        return Draw(alpha, gain, tilt, tuple(masks))

    def spectral(self, feats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Warped, gained and tilted raw log-mel ``feats`` (frames, n_mels) as float32 (a new array
        whenever anything is perturbed; ``feats`` itself is never written). Draws only the spectral
        part of :meth:`draw` from ``rng``; :meth:`mask` draws the rest."""
        draw = Augment(self.warp, self.gain_db, self.tilt_db).draw(rng, feats.shape[1])
        # may share feats' memory: spectral_batch makes new tensors, never in-place
        out = torch.from_numpy(np.ascontiguousarray(feats)).float()[None]
        return spectral_batch(out, [draw])[0].numpy()

    def mask(self, feats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``feats`` (frames, n_mels), normalised, with ``freq_masks`` bands set to zero in place."""
        for start, width in Augment(freq_masks=self.freq_masks, mask_bins=self.mask_bins).draw(rng, feats.shape[1]).masks:
            feats[:, start : start + width] = 0.0
        return feats


def draw_arrays(draws: list[Draw], n_mels: int) -> dict[str, np.ndarray]:
    """``draws`` as host arrays, so a batch's perturbations cross to the device in its one copy:
    ``alpha`` (B,) mel stretch factors, ``offset`` (B, n_mels) gain plus tilt in log-power units,
    ``keep`` (B, n_mels) 0 on each window's masked bands and 1 elsewhere; all float32."""
    alpha = np.array([d.alpha for d in draws], dtype=np.float32)
    gain = np.array([d.gain_db for d in draws], dtype=np.float32)
    tilt = np.array([d.tilt_db for d in draws], dtype=np.float32)
    bins = np.arange(n_mels, dtype=np.float32)
    offset = (gain[:, None] + tilt[:, None] * (bins / max(1, n_mels - 1) - 0.5)) * np.float32(_LN_PER_DB)
    keep = np.ones((len(draws), n_mels), dtype=np.float32)
    for b, draw in enumerate(draws):
        for start, width in draw.masks:
            keep[b, start : start + width] = 0.0
    return {"alpha": alpha, "offset": offset.astype(np.float32), "keep": keep}


def warp_matrix(alpha: torch.Tensor, n_mels: int) -> torch.Tensor:
    """The mel stretches ``alpha`` (B,) as matrices (B, n_mels, n_mels) float32 on alpha's device, for
    ``x @ warp``: a linear interpolation along the mel axis (output bin i reads the input at
    i * alpha, clamped at the top bin)."""
    low, high, frac = _reads(alpha, n_mels)
    warp = torch.zeros(len(alpha), n_mels, n_mels, device=alpha.device)
    warp.scatter_add_(1, low[:, None], (1.0 - frac)[:, None])
    warp.scatter_add_(1, high[:, None], frac[:, None])
    return warp


def _reads(alpha: torch.Tensor, n_mels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where output bin i of a mel stretch by ``alpha`` (N,) reads: input bins ``low`` and ``high``
    (N, n_mels) int64, mixed as ``(1 - frac) * x[low] + frac * x[high]`` (position i * alpha,
    clamped at the top bin)."""
    bins = torch.arange(n_mels, dtype=torch.float32, device=alpha.device)
    pos = torch.clamp(bins[None] * alpha[:, None], max=n_mels - 1)
    low = pos.long()
    return low, torch.clamp(low + 1, max=n_mels - 1), pos - low


def stretch_rows(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Log-mel rows ``x`` (N, n_mels) float32 with row r stretched along the mel axis by ``alpha[r]``
    (N,): the warp of :func:`warp_matrix` as a gather, for rows that each carry their own factor (a
    simulated conversation's speakers); a new tensor. Costs two (N, n_mels) int64 index tensors."""
    low, high, frac = _reads(alpha.to(torch.float32), x.shape[1])
    return torch.lerp(x.gather(1, low), x.gather(1, high), frac)


def spectral_batch(x: torch.Tensor, draws: list[Draw]) -> torch.Tensor:
    """Warp, gain and tilt of raw log-mel windows ``x`` (B, frames, n_mels) float32, window b by
    ``draws[b]``, on x's device; a new tensor (``x`` is never written)."""
    arrays = draw_arrays(draws, x.shape[-1])
    if (arrays["alpha"] != 1.0).any():
        x = torch.bmm(x, warp_matrix(torch.from_numpy(arrays["alpha"]).to(x.device), x.shape[-1]))
    offset = arrays["offset"]
    return x + torch.from_numpy(offset).to(x.device)[:, None, :] if offset.any() else x
