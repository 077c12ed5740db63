"""A trained model loaded from its checkpoint, with what feeding it needs (config, normaliser,
inference settings).

``evaluate --tune`` writes ``tuned.json`` next to the checkpoint it tuned::

    {"threshold": float, "median_frames": int, "fill_speech": bool, "der": float,
     "checkpoint": "best.pt", "checkpoint_xxh3": str, "tuned_on_scored": bool,
     "data": {"view": str, "split": str, "audio_dir": str | null, "recordings": int,
              "features": [features key, ...]}}

Other checkpoints of the run share the directory (``last.pt``, a later ``best.pt``), so the
settings apply only to the file whose xxh3 they name.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline import FeatureConfig
from stores import hash_file
from stores.errors import AgencerdasError

from scoring.stitch import InferenceConfig
from training.checkpoint import load_checkpoint, load_weights
from training.config import TrainConfig
from training.model import build_model
from training.posteriors import recording_posteriors
from training.windows import Normalizer, WindowFormat


@dataclass
class LoadedModel:
    """A trained model ready for inference, with everything needed to feed it."""

    model: torch.nn.Module
    config: TrainConfig
    feature_config: dict
    normalizer: Normalizer
    checkpoint: dict
    inference: InferenceConfig
    checkpoint_xxh3: str
    path: Path
    tuned: dict | None = None  # the tuned.json applied to ``inference``, None when the config's settings are used

    @property
    def frame_shift_s(self) -> float:
        """Seconds per model frame."""
        return self.config.downsample * self.feature_config["hop_length"] / self.feature_config["sample_rate"]

    @property
    def window_format(self) -> WindowFormat:
        """How this model's input is cut from stored base-rate features."""
        return WindowFormat(self.normalizer, self.config.downsample, self.config.pooling)

    def posteriors(self, predict, features, frames: int, window: int | None = None,
                   overlap: float | None = None) -> np.ndarray:
        """Stitched speaker posteriors (model frames, S) of a whole recording of ``frames`` base frames,
        in chunks of ``window`` model frames overlapping by ``overlap`` (default: the inference settings).

        ``predict`` is a :func:`training.posteriors.predictor` of this model. Raises AgencerdasError
        naming the checkpoint when the posteriors are not finite: binarising or scoring NaN fails deep inside.
        """
        post = recording_posteriors(predict, features, self.window_format, frames, window or self.inference.window,
                                    self.inference.overlap if overlap is None else overlap)
        if not np.isfinite(post).all():
            raise AgencerdasError(f"checkpoint {self.path} gives non-finite posteriors (NaN or inf) on this input; "
                                  "the model is broken (a diverged run?): use another checkpoint")
        return post


def load_model(path: Path, device: torch.device, checkpoint_xxh3: str | None = None) -> LoadedModel:
    """Model, config and normaliser from a checkpoint; threshold and median width from the
    run's ``tuned.json`` (written by ``evaluate --tune``) when it names this checkpoint's xxh3,
    else the config's. A ``tuned.json`` of another checkpoint is ignored with a warning.

    ``checkpoint_xxh3`` is the file's hash when the caller has just computed it (not hashed again).
    """
    ckpt = load_checkpoint(path)  # first: a missing or foreign file gets its clear error
    try:  # the pipeline must be able to compute these features for new audio
        FeatureConfig(**ckpt["feature_config"])
    except (TypeError, AgencerdasError) as exc:
        raise AgencerdasError(f"{path}: not a usable agencerdas checkpoint: its feature_config: {exc}") from None
    digest = checkpoint_xxh3 or hash_file(Path(path))
    config = TrainConfig.from_dict(ckpt["config"])  # checked by load_checkpoint
    model = build_model(config, ckpt["feature_config"]["n_mels"])
    load_weights(model, ckpt["model"], path)
    model.to(device).eval()
    tuned = _tuned_for(Path(path), digest)
    settings = tuned or {}
    inference = InferenceConfig(window=config.window, threshold=settings.get("threshold", config.threshold),
                                fill_speech=settings.get("fill_speech", config.fill_speech),
                                median_frames=settings.get("median_frames", config.median_frames),
                                max_overlap=config.max_overlap if config.powerset else None)
    return LoadedModel(model, config, ckpt["feature_config"], Normalizer.from_dict(ckpt["normalizer"]), ckpt, inference,
                       digest, Path(path), tuned)


def _tuned_for(path: Path, checkpoint_xxh3: str) -> dict | None:
    """The run's ``tuned.json`` if it was tuned with this very checkpoint file, else None."""
    tuned_path = path.parent / "tuned.json"
    if not tuned_path.is_file():
        return None
    tuned = json.loads(tuned_path.read_text())
    if tuned.get("checkpoint_xxh3") == checkpoint_xxh3:
        return tuned
    # Written before tuned settings named their checkpoint, or tuned on another one (last.pt, an older best.pt).
    if tuned.get("checkpoint_xxh3"):
        reason = (f"was tuned with another checkpoint file ({tuned.get('checkpoint')}, xxh3 "
                  f"{tuned['checkpoint_xxh3'][:12]}), not {path} (xxh3 {checkpoint_xxh3[:12]})")
    else:
        reason = f"names no checkpoint (written before tuned settings were bound to one), so it may not be {path}'s"
    warnings.warn(f"{tuned_path} {reason}: ignoring it and using the run's configured threshold and median width; "
                  f"rerun `agencerdas evaluate --model {path} --tune` for this checkpoint", stacklevel=3)
    return None
