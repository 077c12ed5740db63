"""A trained model loaded from its checkpoint, with what feeding it needs (config, normaliser,
inference settings)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from scoring.stitch import InferenceConfig
from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.model import build_model
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

    @property
    def frame_shift_s(self) -> float:
        """Seconds per model frame."""
        return self.config.downsample * self.feature_config["hop_length"] / self.feature_config["sample_rate"]

    @property
    def window_format(self) -> WindowFormat:
        """How this model's input is cut from stored base-rate features."""
        return WindowFormat(self.normalizer, self.config.downsample, self.config.pooling)


def load_model(path: Path, device: torch.device) -> LoadedModel:
    """Model, config and normaliser from a checkpoint; threshold and median width from the
    run's ``tuned.json`` (written by ``evaluate --tune``) when present, else the config's."""
    ckpt = load_checkpoint(path)
    config = TrainConfig(**ckpt["config"])
    model = build_model(config, ckpt["feature_config"]["n_mels"])
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    tuned_path = Path(path).parent / "tuned.json"
    tuned = json.loads(tuned_path.read_text()) if tuned_path.is_file() else {}
    inference = InferenceConfig(window=config.window, threshold=tuned.get("threshold", config.threshold),
                                fill_speech=tuned.get("fill_speech", config.fill_speech),
                                median_frames=tuned.get("median_frames", config.median_frames))
    return LoadedModel(model, config, ckpt["feature_config"], Normalizer.from_dict(ckpt["normalizer"]), ckpt, inference)
