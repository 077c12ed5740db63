"""Powerset training: permutation-invariant cross-entropy over classes of speaker sets.

A powerset model (Plaquet & Bredin, Interspeech 2023; pyannote.audio 3) predicts, per frame,
one class among every set of at most K simultaneous speakers of its S slots
(:func:`scoring.powerset.powerset_sets`: the empty set first). Labels stay multilabel
(B, T, S) everywhere upstream (stores, simulation, the batch builders); they become classes
here, after the speaker permutation of each sequence is chosen.

Frames where more than K reference speakers talk have no class. They are left out of the
loss (and counted), rather than mapped to a K-speaker subset, which would teach the model that
one of the speakers present is silent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .loss import PITLoss, best_permutation, pairwise_bce


def speaker_set_classes(labels: Tensor, mapping: Tensor) -> Tensor:
    """Class index (B, T) long of each frame's set of active speakers in ``labels`` (B, T, S) 0/1, for
    the classes ``mapping`` (P, S); -1 where the set has no class (more than K speakers)."""
    speakers = labels.shape[-1]
    bits = 2 ** torch.arange(speakers, device=labels.device)
    codes = ((labels > 0.5).long() * bits).sum(dim=-1)  # (B, T) the set as a bitmask
    table = torch.full((2**speakers,), -1, dtype=torch.long, device=labels.device)
    table[(mapping.long() * bits).sum(dim=-1)] = torch.arange(len(mapping), device=labels.device)
    return table[codes]


def powerset_ce(logits: Tensor, labels: Tensor, mapping: Tensor, mask: Tensor | None = None,
                weights: Tensor | None = None) -> PITLoss:
    """Permutation-invariant powerset cross-entropy.

    For each sequence the reference speakers are permuted to best match the model's per-speaker
    marginals (softmax x ``mapping``), by the same batched search as :func:`training.loss.pit_bce`
    (exact for S <= 4, Hungarian above); the permuted frames become classes, and the loss is the mean
    cross-entropy over the valid frames that have a class, each weighted by its sequence's ``weights``
    (absolute weights: the weighted sum over the number of those frames).
    float32 with autocast disabled, like the PIT loss.

    Args:
        logits: (B, T, P) class logits.
        labels: (B, T, S) 0/1 reference activities.
        mapping: (P, S) float 0/1 speaker set of each class.
        mask: (B, T) bool, True = frame scored; None: every frame.
        weights: (B,) loss weight per sequence (pseudo labels); None: 1.

    Returns:
        :class:`PITLoss` whose ``dropped`` counts the valid frames with more speakers than a class holds.
    """
    if logits.dim() != 3 or labels.dim() != 3 or logits.shape[:2] != labels.shape[:2] \
            or logits.shape[-1] != len(mapping) or labels.shape[-1] != mapping.shape[1]:
        raise ValueError(f"logits (B, T, {len(mapping)}) and labels (B, T, {mapping.shape[1]}) expected, "
                         f"got {tuple(logits.shape)} and {tuple(labels.shape)}")
    mask = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device) if mask is None else mask
    with torch.autocast(device_type=logits.device.type, enabled=False):
        log_probs = F.log_softmax(logits.float(), dim=-1)
        labels32 = labels.float()
        with torch.no_grad():
            marginals = (log_probs.exp() @ mapping).clamp(1e-6, 1 - 1e-6)
            perm = best_permutation(pairwise_bce(torch.logit(marginals), labels32, mask))
        permuted = labels32.gather(2, perm.unsqueeze(1).expand_as(labels32))
        classes = speaker_set_classes(permuted, mapping)
        counted = mask & (classes >= 0)
        frame_weight = counted.float() * (1.0 if weights is None else weights.float()[:, None])
        nll = -log_probs.gather(-1, classes.clamp_min(0)[..., None])[..., 0]
        # Over the number of frames counted, not the sum of their weights: weights are absolute (a batch of
        # half-weight pseudo windows pulls half as hard), and with every weight 1 both are the same mean.
        loss = (nll * frame_weight).sum() / counted.sum().clamp_min(1)
    return PITLoss(loss=loss, perm=perm, permuted_labels=permuted,
                   dropped=(mask & (classes < 0)).sum())
