"""Fine-tuning: a new run whose weights start from another run's checkpoint (``INIT_FROM``).

The EEND recipe (SA-EEND, EEND-EDA) trains on many simulated conversations and then adapts to a
small real corpus; pyannote users fine-tune a pretrained segmentation model on their own data.
Here a run starts from a checkpoint's weights with a fresh optimizer and schedule, on any view
with the same features. The encoder's shape must match; a different output layer (``MAX_SPEAKERS``,
``LOSS``, ``MAX_OVERLAP``) is allowed and re-initialised, everything below it kept. The embedding
head is kept when both have it with the same size, and otherwise starts afresh; the speaker table
never carries over (its rows are the source corpus's speakers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from agencerdas.stores import hash_file
from agencerdas.stores.errors import AgencerdasError

from .checkpoint import load_checkpoint
from .config import TrainConfig

#: Fields that shape the encoder: a source checkpoint must have them as this run does.
ENCODER_FIELDS = ("dim", "blocks", "heads", "ff_mult", "downsample", "pooling")


@dataclass
class Source:
    """The checkpoint a fine-tuned run starts from."""

    path: Path
    xxh3: str
    config: TrainConfig
    weights: dict[str, torch.Tensor]
    normalizer: dict
    new_head: bool  # its output layer differs from this run's and is re-initialised

    def provenance(self) -> dict:
        """What config.json, every checkpoint and the summary record of the source."""
        return {"path": str(self.path.resolve()), "xxh3": self.xxh3, "preset": self.config.preset, "loss": self.config.loss,
                "head_reinitialised": self.new_head}


def load_source(cfg: TrainConfig, feature_config: dict) -> Source:
    """The checkpoint ``cfg.init_from``, checked against this run: same features, same encoder shape."""
    path = Path(cfg.init_from)
    ckpt = load_checkpoint(path)
    source = TrainConfig.from_dict(ckpt["config"])
    differ = [f"{name} ({getattr(source, name)!r} there, {getattr(cfg, name)!r} here)"
              for name in ENCODER_FIELDS if getattr(source, name) != getattr(cfg, name)]
    if ckpt["feature_config"] != feature_config:
        differ.append(f"features ({ckpt['feature_config']} there, {feature_config} here)")
    if differ:
        raise AgencerdasError(f"INIT_FROM={path}: its model differs from this run's in {'; '.join(differ)}; set "
                              f"those fields as the checkpoint has them (or train from scratch)")
    return Source(path, hash_file(path), source, ckpt["model"], ckpt["normalizer"], _head(source) != _head(cfg))


def _head(cfg: TrainConfig) -> tuple:
    """What shapes the output layer (``MAX_OVERLAP`` only for a powerset head)."""
    return cfg.max_speakers, cfg.loss, cfg.max_overlap if cfg.powerset else None


def initialise(model: torch.nn.Module, source: Source) -> None:
    """``model``'s weights from ``source``; the output layer stays as initialised when it differs, and so do
    the embedding head (unless both have it, of one size) and the speaker table."""
    fresh = ("speaker_table", *(("head.",) if source.new_head else ()), *(("embed.",) if _new_embedding(model, source) else ()))
    weights = {k: v for k, v in source.weights.items() if not k.startswith(fresh)}
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # a shape that differs from the one its own config describes
        raise AgencerdasError(f"INIT_FROM={source.path}: its weights do not fit the model its config describes "
                              f"({exc})") from None
    if unexpected or [k for k in missing if not k.startswith(fresh)]:
        raise AgencerdasError(f"INIT_FROM={source.path}: its weights do not fit this model (missing {missing}, "
                              f"unexpected {unexpected})")
    if not all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()):
        raise AgencerdasError(f"INIT_FROM={source.path}: holds non-finite weights; use another checkpoint")


def _new_embedding(model: torch.nn.Module, source: Source) -> bool:
    """Whether ``model``'s embedding head cannot take the source's (one of them has none, or sizes differ)."""
    mine = model.embed.weight.shape if model.embed is not None else None
    theirs = source.weights.get("embed.weight")
    return mine is None or theirs is None or tuple(theirs.shape) != tuple(mine)


def freeze(model: torch.nn.Module, blocks: int) -> None:
    """Keep the input projection and the first ``blocks`` encoder blocks as they are (no gradients)."""
    if not blocks:
        return
    for module in (model.input_proj, *model.blocks[:blocks]):
        for parameter in module.parameters():
            parameter.requires_grad_(False)
