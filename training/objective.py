"""The loss a run optimizes, whatever the model's head: PIT BCE for one sigmoid per speaker slot,
powerset cross-entropy for one softmax class per speaker set; pseudo-label weights in both."""

from __future__ import annotations

from torch import Tensor

from .loss import PITLoss, pit_bce, weighted_bce
from .model import EEND
from .powerset import powerset_ce


def training_loss(model: EEND, logits: Tensor, labels: Tensor, mask: Tensor, weights: Tensor | None = None) -> PITLoss:
    """The loss of ``model``'s ``logits`` against multilabel ``labels`` (B, T, S) on the ``mask`` (B, T)
    frames, each sequence weighted by ``weights`` (B,) when given; ``loss`` is what is optimized."""
    if model.mapping is not None:
        return powerset_ce(logits, labels, model.mapping, mask, weights)
    result = pit_bce(logits, labels, mask)
    if weights is None:
        return result
    loss = weighted_bce(logits, result.permuted_labels, mask, weights)
    return result._replace(loss=loss)
