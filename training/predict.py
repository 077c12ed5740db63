"""Running a trained model over whole recordings from the store (validation, evaluation)."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.rttm import Segment
from stores import Store, ViewRecording, downsample_features, read_rows

from .checkpoint import load_checkpoint
from .config import TrainConfig
from .data import Normalizer
from .infer import InferenceConfig, activity_to_segments, stitched_posteriors


def model_rate_reader(features, normalizer: Normalizer, downsample: int, pooling: str, frames: int):
    """``read(start, n)`` over model frames of a stored features array, and the number of model frames.

    ``frames`` base frames are used (a cap may shorten the recording); the last
    partial group of base frames is zero-padded to a whole model frame.
    """
    n_model = -(-frames // downsample)

    def read(start: int, n: int) -> np.ndarray:
        base = read_rows(features, start * downsample, n * downsample).astype(np.float32)
        valid = max(0, min(len(base), frames - start * downsample))
        base[:valid] = normalizer(base[:valid])
        base[valid:] = 0.0
        return downsample_features(base, downsample, pooling)

    return read, n_model


def predictor(model: torch.nn.Module, device: torch.device, autocast: AbstractContextManager):
    """``predict(x (n, D)) -> (n, S)`` speaker probabilities for one chunk, no gradients."""

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad(), autocast:
            logits, _ = model(torch.from_numpy(x).to(device)[None])
        return torch.sigmoid(logits.float())[0].cpu().numpy()

    return predict


def recording_posteriors(predict, features, normalizer: Normalizer, downsample: int, pooling: str, frames: int,
                         window: int, overlap: float = 0.5) -> np.ndarray:
    """Stitched speaker posteriors (model frames, S) for a whole recording of ``frames`` base frames."""
    read, n_model = model_rate_reader(features, normalizer, downsample, pooling, frames)
    step = max(1, round(window * (1 - overlap)))
    return stitched_posteriors(predict, read, n_model, window, step)


def reference_segments(store: Store, rec: ViewRecording, frames: int) -> tuple[list[Segment], list | None]:
    """Reference turns rebuilt from the stored base-rate labels (10 ms resolution) and the UEM."""
    group = store.open("labels", rec.labels)
    attrs = group.attrs.asdict()
    labels = np.asarray(group["labels"][:frames]).astype(bool)
    names = list(attrs["speakers"]) + [f"spk{i}" for i in range(len(attrs["speakers"]), labels.shape[1])]
    segments = activity_to_segments(labels, attrs["frame_shift_s"], names)
    uem = [tuple(r) for r in attrs["uem"]] if attrs.get("uem") else None
    return segments, uem


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


def load_model(path: Path, device: torch.device) -> LoadedModel:
    """Model, config and normaliser from a checkpoint; threshold and median width from the
    run's ``tuned.json`` (written by ``evaluate --tune``) when present, else the config's."""
    from .loop import build_model

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
