"""Self-attention end-to-end neural diarization (SA-EEND, Fujita et al. 2019).

The network maps a sequence of feature frames (log-mel filterbanks, already
spliced with their neighbours and subsampled by the feature pipeline) to one
speech-activity logit per frame and speaker slot. Speaker slots carry no
identity: the permutation-invariant loss in :mod:`training.loss` decides which
reference speaker each slot is scored against.

Shapes use B = batch size, T = frames, F = input features per frame,
S = ``max_speakers`` output slots, H = attention heads, D = model width,
E = speaker-embedding size, N = speaker identities of the train split.

With an embedding head (EEND-VC, Kinoshita et al. 2021) the same network also gives one unit
vector per output slot of a chunk, for the speaker that slot holds: the encoder's frames pooled
with the slot's activity as weights, then a projection. Inference clusters these vectors across
a recording's chunks, so a recording may have more speakers than the model has slots.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agencerdas.scoring.powerset import powerset_sets

from .config import TrainConfig


class EENDOutput(NamedTuple):
    """What :meth:`EEND.forward` gives.

    Attributes:
        logits: (B, T, S) per-slot logits, or (B, T, P) class logits of a powerset model.
        attention: one (B, H, T, T) float32 map per block when asked for, else None.
        embeddings: (B, S, E) float32 unit vectors, one per slot, when the model has the head, else None.
    """

    logits: Tensor
    attention: list[Tensor] | None
    embeddings: Tensor | None


class SelfAttention(nn.Module):
    """Multi-head self-attention over frames, with an optional key mask.

    Args:
        dim: model width D; must be divisible by ``heads``.
        heads: number of attention heads H.
        dropout: dropout on the attention weights (training only).
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: Tensor, key_mask: Tensor | None, return_attention: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Attend every frame to every valid frame of the same sequence.

        Args:
            x: (B, T, D) frame embeddings.
            key_mask: (B, 1, 1, T) bool, True = frame may be attended to, or
                None when every frame is valid. Each sequence must have at
                least one True entry (see :meth:`EEND.forward`).
            return_attention: compute the softmax explicitly and return it.

        Returns:
            (B, T, D) attended embeddings, and the (B, H, T, T) float32
            attention weights (rows sum to 1, before dropout) when
            ``return_attention`` is set, otherwise None.
        """
        batch, frames, dim = x.shape
        # (B, T, 3D) -> 3 x (B, H, T, D/H)
        q, k, v = (
            self.qkv(x)
            .view(batch, frames, 3, self.heads, self.head_dim)
            .permute(2, 0, 3, 1, 4)
            .unbind(0)
        )
        dropout_p = self.dropout if self.training else 0.0
        weights: Tensor | None = None
        if return_attention:
            # Scores grow with T and the activations' scale; under fp16
            # autocast they can exceed 65504, so the whole softmax path runs
            # in float32 with autocast disabled (matmul would otherwise be
            # cast back down to the low-precision dtype).
            with torch.autocast(device_type=x.device.type, enabled=False):
                scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(self.head_dim)
                if key_mask is not None:
                    scores = scores.masked_fill(~key_mask, float("-inf"))
                weights = scores.softmax(dim=-1)
                out = F.dropout(weights, dropout_p, self.training) @ v.float()
            out = out.to(q.dtype)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p)
        out = out.transpose(1, 2).reshape(batch, frames, dim)
        return self.proj(out), weights


class EncoderBlock(nn.Module):
    """Pre-norm Transformer encoder layer: x + MHSA(LN(x)), then x + FF(LN(x)).

    Pre-norm keeps the residual path an identity, which trains stably without
    the learning-rate warm-up tuning post-norm layers need.

    Args:
        dim: model width D.
        heads: attention heads H.
        ff_mult: feed-forward hidden width as a multiple of D.
        dropout: dropout on attention weights and on both residual branches.
    """

    def __init__(self, dim: int, heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, dim * ff_mult),
            nn.GELU(),
            nn.Linear(dim * ff_mult, dim),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, key_mask: Tensor | None, return_attention: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Apply the layer.

        Args:
            x: (B, T, D) frame embeddings.
            key_mask: (B, 1, 1, T) bool key mask or None, as for
                :meth:`SelfAttention.forward`.
            return_attention: also return the (B, H, T, T) attention weights.

        Returns:
            (B, T, D) embeddings and the attention weights or None.
        """
        attended, weights = self.attn(self.attn_norm(x), key_mask, return_attention)
        x = x + self.dropout(attended)
        x = x + self.dropout(self.ff(self.ff_norm(x)))
        return x, weights


class EEND(nn.Module):
    """SA-EEND: Transformer encoder with per-frame speaker outputs, and optionally one embedding per slot.

    Input projection (Linear + LayerNorm) -> ``blocks`` pre-norm encoder
    layers -> LayerNorm -> Linear to ``max_speakers`` logits per frame (PIT), or to one logit per
    powerset class (each set of at most ``max_overlap`` speakers); with ``embed_dim`` > 0, an
    embedding head pools the encoder's frames into one unit vector per slot (:meth:`slot_embeddings`).

    There is no positional encoding, as in the original SA-EEND: each input
    frame is already a spliced context window, so local temporal order is in
    the features themselves, and the attention layers only need to relate
    frames by *who* is speaking, which is order-free. Leaving it out also
    makes the model indifferent to chunk length and offset, so it runs on
    sequences longer than those it was trained on.

    Args:
        in_features: F, features per input frame.
        dim: model width D; must be divisible by ``heads``.
        blocks: number of encoder layers.
        heads: attention heads H per layer.
        max_speakers: S, output speaker slots.
        ff_mult: feed-forward hidden width as a multiple of D.
        dropout: dropout probability used throughout (training only).
        powerset: (P, S) 0/1 class-to-speakers mapping of a powerset head, or None for one sigmoid per slot.
        embed_dim: E, the speaker-embedding size; 0: no embedding head.
        identities: N, rows of the training-only speaker table the embedding loss scores against
            (:attr:`speaker_table`); 0: none (inference).
    """

    def __init__(
        self,
        in_features: int,
        dim: int = 128,
        blocks: int = 3,
        heads: int = 4,
        max_speakers: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.1,
        powerset: np.ndarray | None = None,
        embed_dim: int = 0,
        identities: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_features", in_features),
            ("dim", dim),
            ("blocks", blocks),
            ("heads", heads),
            ("max_speakers", max_speakers),
            ("ff_mult", ff_mult),
        ):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_features = in_features
        self.max_speakers = max_speakers
        self.input_proj = nn.Sequential(nn.Linear(in_features, dim), nn.LayerNorm(dim))
        self.blocks = nn.ModuleList(
            EncoderBlock(dim, heads, ff_mult, dropout) for _ in range(blocks)
        )
        self.out_norm = nn.LayerNorm(dim)
        # Powerset: one output per speaker set (P, S), saved with the config, not the weights.
        self.register_buffer("mapping", None if powerset is None else torch.from_numpy(powerset).float(),
                             persistent=False)
        self.head = nn.Linear(dim, max_speakers if powerset is None else len(powerset))
        # Made after the head: a model without them draws the same initial weights as one with them.
        self.embed = nn.Linear(dim, embed_dim) if embed_dim else None
        self.speaker_table = nn.Parameter(torch.randn(identities, embed_dim) / math.sqrt(embed_dim)) \
            if embed_dim and identities else None

    def forward(self, x: Tensor, mask: Tensor | None = None, return_attention: bool = False) -> EENDOutput:
        """Compute speech-activity logits for every frame and speaker slot (and each slot's embedding).

        Args:
            x: (B, T, F) float input frames.
            mask: (B, T) bool, True = valid frame, False = padding. Padded
                frames are never attended to, so they cannot influence the
                valid frames' outputs; their own logits are meaningless and
                must be masked out by the caller. Pass None when nothing is
                padded: an absent mask lets fused attention pick its fastest
                kernel.
            return_attention: also return every layer's attention weights.
                This computes the softmax explicitly, using O(B*H*T^2) memory;
                meant for inspection, not training.

        Returns:
            :class:`EENDOutput`: (B, T, S) logits (sigmoid gives per-speaker activity probability), or
            (B, T, P) class logits of a powerset model (:meth:`activity` gives per-speaker probabilities
            of either); only when ``return_attention`` is set, a list with one (B, H, T, T) float32
            tensor per block whose rows (queries) sum to 1 over the keys (last dim); with an embedding
            head, (B, S, E) unit vectors (:meth:`slot_embeddings`).
        """
        if x.dim() != 3 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"expected input of shape (batch, frames, {self.in_features}), got {tuple(x.shape)}"
            )
        key_mask: Tensor | None = None
        if mask is not None:
            if mask.dtype != torch.bool or mask.shape != x.shape[:2]:
                raise ValueError(
                    f"mask must be a bool tensor of shape {tuple(x.shape[:2])}, "
                    f"got {mask.dtype} {tuple(mask.shape)}"
                )
            # A sequence with no valid frame would give every query an empty
            # key set, and softmax over nothing is NaN, which would poison the
            # whole batch's gradients. Such a sequence is all padding, so let
            # it attend everywhere: its outputs are finite and ignored anyway.
            key_mask = (mask | ~mask.any(dim=1, keepdim=True))[:, None, None, :]

        h = self.input_proj(x)
        maps: list[Tensor] = []
        for block in self.blocks:
            h, weights = block(h, key_mask, return_attention)
            if weights is not None:
                maps.append(weights)
        h = self.out_norm(h)
        logits = self.head(h)
        embeddings = self.slot_embeddings(h, logits, mask) if self.embed is not None else None
        return EENDOutput(logits, maps if return_attention else None, embeddings)

    def slot_embeddings(self, h: Tensor, logits: Tensor, mask: Tensor | None) -> Tensor:
        """(B, S, E) float32 unit vectors: each slot's weighted mean of the encoder's frames ``h`` (B, T, D)
        over the valid frames of ``mask`` (B, T) (None: all), projected to E.

        A frame weighs the probability that the slot speaks there alone, p_s x prod_{k != s} (1 - p_k),
        from the model's own activity, detached: inference has nothing else, the embedding loss should
        shape who a slot is, not when it speaks, and overlapped frames hold two voices (pyannote leaves
        them out of its embeddings too); the measurement that chose it is in docs/results.md.
        """
        with torch.autocast(device_type=h.device.type, enabled=False):
            activity = self.activity(logits.detach())
            silent = 1.0 - activity
            # prod over the other slots of (1 - p_k), slot by slot (S is small): dividing the product over all
            # slots by the slot's own term would lose exactly the confident frames, where 1 - p_s rounds to 0
            others = torch.stack([torch.cat((silent[..., :s], silent[..., s + 1 :]), dim=-1).prod(dim=-1)
                                  for s in range(silent.shape[-1])], dim=-1)
            alone = activity * others
            # a slot never alone in the window (always overlapped) falls back to its plain activity
            weights = torch.where(alone.sum(dim=1, keepdim=True) > 1e-3, alone, activity)
            if mask is not None:
                weights = weights * mask[..., None]
            pooled = weights.transpose(1, 2) @ h.float() / (weights.sum(dim=1)[..., None] + 1e-6)
            return F.normalize(self.embed(pooled), dim=-1)

    def activity(self, logits: Tensor) -> Tensor:
        """Per-speaker activity probabilities (B, T, S) float32 from :meth:`forward`'s logits: sigmoids, or
        for a powerset model the marginals, softmax over the classes times the class-to-speakers mapping."""
        if self.mapping is None:
            return torch.sigmoid(logits.float())
        return torch.softmax(logits.float(), dim=-1) @ self.mapping

    def decisions(self, logits: Tensor, threshold: float) -> Tensor:
        """Which slots speak (B, T, S) bool: sigmoid above ``threshold``, or for a powerset model the
        speakers of the most probable class (no threshold)."""
        if self.mapping is None:
            return torch.sigmoid(logits.float()) > threshold
        return self.mapping[logits.argmax(dim=-1)].bool()


def build_model(cfg: TrainConfig, n_mels: int, identities: int = 0) -> EEND:
    """The EEND of ``cfg`` for base-rate features of ``n_mels`` bins (input D = downsample x n_mels for
    ``stack`` pooling, n_mels for ``mean``), with the embedding head when ``cfg`` trains one and, for
    training, a speaker table of ``identities`` rows."""
    in_features = n_mels * cfg.downsample if cfg.pooling == "stack" else n_mels
    powerset = powerset_sets(cfg.max_speakers, cfg.max_overlap) if cfg.powerset else None
    embed_dim = cfg.embed_dim if cfg.embeds else 0
    return EEND(in_features, cfg.dim, cfg.blocks, cfg.heads, cfg.max_speakers, cfg.ff_mult, cfg.dropout, powerset,
                embed_dim, identities)


#: Weights only training uses: inference loads a checkpoint without them.
TRAINING_ONLY = ("speaker_table",)
