"""The speaker-embedding loss: each output slot's embedding should name the speaker the diarization
loss gave that slot.

An additive-margin softmax (CosFace, Wang et al. 2018; the loss of WeSpeaker's and pyannote's
embedding models) over the train split's identities: the cosine between a slot's unit embedding
and each identity's row of the model's speaker table, scaled, with ``margin`` taken off the true
identity's cosine so that one identity's embeddings gather closer than the softmax alone asks.
The slot-to-speaker assignment is the permutation the diarization loss chose (PIT or powerset),
so the embedding of slot i is scored against the identity of the reference speaker slot i was
trained to follow (EEND-VC, Kinoshita et al. 2021).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Scale of the cosine logits (CosFace's and WeSpeaker's 30): unit cosines need it to make a sharp softmax.
SCALE = 30.0


def speaker_loss(embeddings: Tensor, table: Tensor, perm: Tensor, speakers: Tensor, margin: float) -> Tensor:
    """Mean additive-margin softmax loss over the slots that follow a known speaker.

    Args:
        embeddings: (B, S, E) unit vectors, one per output slot.
        table: (N, E) one row per identity (normalised here).
        perm: (B, S) long, the reference label column the diarization loss assigned to each slot.
        speakers: (B, S) long, the identity of each reference label column, -1 for none (an empty
            column, a pseudo-labelled recording).
        margin: subtracted from the true identity's cosine (0: a plain cosine softmax).

    Returns:
        Scalar float32; 0 (still differentiable) when no slot follows a known speaker. Reads nothing
        back from the device.
    """
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        ids = speakers.gather(1, perm)  # (B, S): who each slot was made to follow
        known = (ids >= 0).flatten()
        target = ids.clamp_min(0).flatten()
        cosine = embeddings.float().flatten(0, 1) @ F.normalize(table.float(), dim=-1).T  # (B*S, N)
        cosine = cosine - margin * F.one_hot(target, len(table)) * known[:, None]
        loss = F.cross_entropy(SCALE * cosine, target, reduction="none")
        return (loss * known).sum() / known.sum().clamp_min(1)
