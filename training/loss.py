"""Permutation-invariant training loss and a frame-level error proxy for EEND.

The model's speaker slots are unordered, so each sequence is scored against
the ordering of its reference speakers that fits it best (permutation-
invariant training, Fujita et al. 2019).

Shapes use B = batch size, T = frames, S = speaker slots.
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

# Up to 4! = 24 orderings, scoring every one on-device is cheaper than a host
# round-trip for the Hungarian algorithm; beyond that S! explodes.
EXACT_SEARCH_MAX_SPEAKERS = 4


class PITLoss(NamedTuple):
    """Result of :func:`pit_bce` and :func:`training.powerset.powerset_ce`.

    Attributes:
        loss: scalar float32 tensor to backpropagate.
        perm: (B, S) long; ``perm[b, i]`` is the reference label column
            assigned to output slot ``i`` of sequence ``b``.
        permuted_labels: (B, T, S) float32 labels reordered to match the
            outputs, ``permuted_labels[b, :, i] == labels[b, :, perm[b, i]]``.
    """

    loss: Tensor
    perm: Tensor
    permuted_labels: Tensor
    dropped: Tensor | None = None  # powerset: valid frames whose speaker set has no class (left out)


class FrameErrorCounts(TypedDict):
    """Frame-level diarization error counts, in speaker-frames.

    Summed over batches, ``(miss + false_alarm + confusion) / speech`` is a
    frame-level diarization error rate (no forgiveness collar).
    """

    miss: int
    false_alarm: int
    confusion: int
    speech: int


@functools.lru_cache(maxsize=None)
def _all_permutations(speakers: int, device: torch.device) -> Tensor:
    """(S!, S) long tensor holding every permutation of range(S), identity first."""
    return torch.tensor(list(itertools.permutations(range(speakers))), device=device)


def _check_inputs(logits: Tensor, labels: Tensor, mask: Tensor | None) -> Tensor:
    """Validate shapes and return the (B, T) bool mask, all True if absent."""
    if logits.dim() != 3 or labels.shape != logits.shape:
        raise ValueError(
            "logits and labels must both have shape (batch, frames, speakers), "
            f"got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if mask is None:
        return torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
    if mask.dtype != torch.bool or mask.shape != logits.shape[:2]:
        raise ValueError(
            f"mask must be a bool tensor of shape {tuple(logits.shape[:2])}, "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )
    return mask


def pairwise_bce(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Summed BCE of every output slot against every label column.

    Args:
        logits: (B, T, S) float32.
        labels: (B, T, S) float32 in [0, 1].
        mask: (B, T) bool, True = valid frame.

    Returns:
        (B, S, S) float32; ``cost[b, i, j]`` is the BCE of output ``i`` against
        label column ``j`` summed over the valid frames of sequence ``b``.
    """
    weights = mask.unsqueeze(-1).to(logits.dtype)
    # BCE-with-logits(x, y) = softplus(x) - x * y exactly, and it is linear in
    # y, so all S x S pairings come from one batched matmul instead of a
    # (B, T, S, S) tensor of elementwise losses.
    softplus_sum = (F.softplus(logits) * weights).sum(dim=1)  # (B, S)
    cross = torch.einsum("bti,btj->bij", logits * weights, labels)  # (B, S, S)
    return softplus_sum.unsqueeze(-1) - cross


def best_permutation(cost: Tensor) -> Tensor:
    """Assignment of label columns to outputs that minimises the total cost.

    Args:
        cost: (B, S, S), ``cost[b, i, j]`` = cost of giving output ``i`` label ``j``.

    Returns:
        (B, S) long on ``cost.device``; ``perm[b, i]`` = label column for output ``i``.
    """
    batch, speakers, _ = cost.shape
    if speakers <= EXACT_SEARCH_MAX_SPEAKERS:
        perms = _all_permutations(speakers, cost.device)  # (P, S)
        outputs = torch.arange(speakers, device=cost.device).expand_as(perms)
        scores = cost[:, outputs, perms].sum(dim=-1)  # (B, P)
        return perms[scores.argmin(dim=1)]
    rows = [linear_sum_assignment(item)[1] for item in cost.cpu().numpy()]
    return torch.from_numpy(np.stack(rows)).to(device=cost.device, dtype=torch.long)


def pit_bce(logits: Tensor, labels: Tensor, mask: Tensor | None = None) -> PITLoss:
    """Permutation-invariant binary cross-entropy over speaker activities.

    For each sequence, the label columns are reordered to the permutation that
    minimises that sequence's BCE over its valid frames: exhaustively on-device
    for S <= 4, with the Hungarian algorithm (on the host) above that. The
    loss is then the mean BCE over all valid frames of the batch and all
    speaker slots, so every valid frame weighs the same whatever the length of
    its sequence. All arithmetic is float32 with autocast disabled, so it is
    safe to call on fp16/bf16 logits inside an autocast region.

    Args:
        logits: (B, T, S) speech-activity logits.
        labels: (B, T, S) reference activities, float or integer 0/1 (soft
            labels in [0, 1] are allowed). Speakers absent from a sequence
            are all-zero columns.
        mask: (B, T) bool, True = valid frame; None means every frame is valid.

    Returns:
        :class:`PITLoss`. With no valid frame at all the loss is 0 (and still
        differentiable).
    """
    mask = _check_inputs(logits, labels, mask)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits32 = logits.float()
        labels32 = labels.float()
        with torch.no_grad():
            perm = best_permutation(pairwise_bce(logits32, labels32, mask))
        permuted = labels32.gather(2, perm.unsqueeze(1).expand_as(labels32))
        weights = mask.unsqueeze(-1).to(torch.float32)
        bce = F.binary_cross_entropy_with_logits(logits32, permuted, reduction="none")
        count = weights.sum() * logits.shape[-1]
        loss = (bce * weights).sum() / count.clamp_min(1.0)
    return PITLoss(loss=loss, perm=perm, permuted_labels=permuted)


def frame_error_counts(hyp: Tensor, permuted_labels: Tensor, mask: Tensor | None = None) -> Tensor:
    """Count frame-level diarization errors of speaker decisions, on the device.

    Follows the DER definition frame by frame, with n_ref reference speakers,
    n_hyp detected speakers and n_correct slots both active:
    miss = max(0, n_ref - n_hyp), false alarm = max(0, n_hyp - n_ref),
    confusion = min(n_ref, n_hyp) - n_correct. Outputs are matched to
    speakers by the PIT permutation (optimal for BCE, not necessarily for
    DER), and there is no collar, so this is a cheap proxy for the DER that
    :mod:`pyannote.metrics` would report.

    Args:
        hyp: (B, T, S) bool, which output slots speak (e.g. ``EEND.decisions``).
        permuted_labels: (B, T, S) references already aligned to the outputs,
            e.g. :attr:`PITLoss.permuted_labels`; values > 0.5 count as active.
        mask: (B, T) bool, True = valid frame; None means every frame is valid.

    Returns:
        (4,) float tensor on hyp's device: miss, false alarm, confusion and speech, each a count
        of speaker-frames over the valid frames; speech is the total reference speech (sum of n_ref).
    """
    mask = _check_inputs(hyp, permuted_labels, mask)
    ref = permuted_labels.float() > 0.5
    n_hyp = hyp.sum(dim=-1)  # (B, T)
    n_ref = ref.sum(dim=-1)
    n_correct = (hyp & ref).sum(dim=-1)
    per_frame = torch.stack(
        [
            (n_ref - n_hyp).clamp_min(0),
            (n_hyp - n_ref).clamp_min(0),
            torch.minimum(n_ref, n_hyp) - n_correct,
            n_ref,
        ]
    )  # (4, B, T)
    return (per_frame * mask).sum(dim=(1, 2))


def frame_error(logits: Tensor, permuted_labels: Tensor, mask: Tensor | None = None,
                threshold: float = 0.5) -> FrameErrorCounts:
    """:func:`frame_error_counts` of speech-activity ``logits`` (B, T, S) thresholded at ``threshold`` (a
    probability), read to the host (one transfer for all four counts)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    hyp = torch.sigmoid(logits.float()) > threshold
    miss, false_alarm, confusion, speech = frame_error_counts(hyp, permuted_labels, mask).tolist()
    return FrameErrorCounts(miss=miss, false_alarm=false_alarm, confusion=confusion, speech=speech)


def weighted_bce(logits: Tensor, permuted_labels: Tensor, mask: Tensor | None, weights: Tensor) -> Tensor:
    """BCE against PIT-aligned labels with a weight per sequence (e.g. down-weighted pseudo labels).

    logits, permuted_labels: (B, T, S); mask: (B, T) bool or None; weights: (B,) float.
    Returns the weighted sum over valid frames and speakers divided by their number, float32: the weights
    are absolute, so a sequence of weight 0.5 pulls half as hard whatever else is in the batch (dividing by
    the sum of the weights would train a batch of such sequences at full strength); with every weight 1
    this is :func:`pit_bce`'s loss, and it is 0 when every weight is 0.
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        bce = F.binary_cross_entropy_with_logits(logits.float(), permuted_labels.float(), reduction="none")
        valid = torch.ones(bce.shape[:2], device=bce.device) if mask is None else mask.float()
        total = (valid * weights.float()[:, None] * bce.sum(dim=-1)).sum()
        return total / (valid.sum() * bce.shape[-1]).clamp_min(1.0)
