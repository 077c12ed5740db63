"""The loss a run optimizes, whatever the model's head: PIT BCE for one sigmoid per speaker slot,
powerset cross-entropy for one softmax class per speaker set; pseudo-label weights in both; plus,
for a model with an embedding head, the speaker-embedding loss on the same slot assignment."""

from __future__ import annotations

from torch import Tensor

from .embedding import speaker_loss
from .loss import PITLoss, pit_bce, weighted_bce
from .model import EEND, EENDOutput
from .powerset import powerset_ce


def diarization_loss(model: EEND, logits: Tensor, labels: Tensor, mask: Tensor, weights: Tensor | None = None) -> PITLoss:
    """The loss of ``model``'s ``logits`` against multilabel ``labels`` (B, T, S) on the ``mask`` (B, T)
    frames, each sequence weighted by ``weights`` (B,) when given; ``loss`` is what is optimized."""
    if model.mapping is not None:
        return powerset_ce(logits, labels, model.mapping, mask, weights)
    result = pit_bce(logits, labels, mask)
    if weights is None:
        return result
    loss = weighted_bce(logits, result.permuted_labels, mask, weights)
    return result._replace(loss=loss)


def training_loss(model: EEND, output: EENDOutput, batch: dict, weighted: bool, embed_weight: float = 0.0,
                  margin: float = 0.0) -> PITLoss:
    """The loss optimized on ``batch`` (``labels``, ``mask``, ``weight``, ``speakers``: see
    :class:`~training.resident.ResidentWindows`): the diarization loss (pseudo-weighted when ``weighted``)
    plus ``embed_weight`` x :func:`~training.embedding.speaker_loss` when the model embeds."""
    result = diarization_loss(model, output.logits, batch["labels"], batch["mask"], batch["weight"] if weighted else None)
    if output.embeddings is None or model.speaker_table is None:
        return result
    embedding = speaker_loss(output.embeddings, model.speaker_table, result.perm, batch["speakers"], margin)
    return result._replace(loss=result.loss + embed_weight * embedding)
