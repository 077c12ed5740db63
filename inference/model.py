"""A trained model loaded from its checkpoint, with what feeding it needs (config, normaliser,
inference settings).

``evaluate --tune`` writes ``tuned.json`` next to the checkpoint it tuned::

    {"threshold": float, "median_frames": int, "fill_speech": bool, "der": float,
     "clustering": bool, "cluster_threshold": float, "chunk_frames": int, "chunk_overlap": float
     (the last three with clustering: tuned without a number of speakers, on chunks of that length),
     "checkpoint": "best.pt", "checkpoint_xxh3": str, "tuned_on_scored": bool,
     "data": {"view": str, "split": str, "audio_dir": str | null, "recordings": int,
              "features": [features key, ...]}}

Other checkpoints of the run share the directory (``last.pt``, a later ``best.pt``), so the
settings apply only to the file whose xxh3 they name, and only to the inference they were tuned for
(clustering or stitching).

Clustering (``--clustering``): ``auto`` clusters with a model that has the speaker-embedding head
and stitches with one that has not (checkpoints written before the head existed).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from agencerdas.pipeline import FeatureConfig
from agencerdas.stores import hash_file
from agencerdas.stores.errors import AgencerdasError

from agencerdas.scoring.stitch import InferenceConfig
from agencerdas.training.checkpoint import load_checkpoint, load_weights
from agencerdas.training.config import TrainConfig
from agencerdas.training.model import TRAINING_ONLY, build_model
from agencerdas.training.posteriors import Chunks, clustered_posteriors, inference_settings, recording_chunks, recording_posteriors
from agencerdas.training.windows import Normalizer, WindowFormat


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
        """Speaker posteriors of a whole recording of ``frames`` base frames: (model frames, S) stitched, or
        (model frames, K) for the K speakers clustering finds; in chunks of ``window`` model frames
        overlapping by ``overlap`` (default: the inference settings).

        ``predict`` is a :func:`training.posteriors.predictor` of this model. Raises AgencerdasError
        naming the checkpoint when the model's outputs are not finite: binarising or scoring NaN fails deep inside.
        """
        inf = self.inference
        if window or overlap is not None:
            inf = replace(inf, window=window or inf.window, overlap=inf.overlap if overlap is None else overlap)
        if inf.clustering:
            return self.clustered(recording_chunks(predict, features, self.window_format, frames, inf.window,
                                                   inf.overlap), inf)
        return self._checked(recording_posteriors(predict, features, self.window_format, frames, inf.window,
                                                  inf.overlap))

    def chunks(self, predict, features, frames: int) -> Chunks:
        """The model's slots of each chunk of a whole recording of ``frames`` base frames, with their
        embeddings, before clustering (the inference settings' chunks)."""
        return recording_chunks(predict, features, self.window_format, frames, self.inference.window,
                                self.inference.overlap)

    def clustered(self, chunks: Chunks, inf: InferenceConfig | None = None) -> np.ndarray:
        """Posteriors (model frames, K) of the speakers that clustering ``chunks`` by ``inf`` (default: the
        inference settings) finds."""
        self._checked(chunks.activity)
        self._checked(chunks.embeddings)
        return clustered_posteriors(chunks, inf or self.inference, self.frame_shift_s)

    def _checked(self, values: np.ndarray) -> np.ndarray:
        if not np.isfinite(values).all():
            raise AgencerdasError(f"checkpoint {self.path} gives non-finite posteriors (NaN or inf) on this input; "
                                  "the model is broken (a diverged run?): use another checkpoint")
        return values


def load_model(path: Path, device: torch.device, checkpoint_xxh3: str | None = None, clustering: str = "auto",
               num_speakers: int | None = None, min_speakers: int | None = None, max_speakers: int | None = None,
               chunk_s: float | None = None, chunk_hop_s: float | None = None) -> LoadedModel:
    """Model, config and normaliser from a checkpoint; threshold and median width from the
    run's ``tuned.json`` (written by ``evaluate --tune``) when it names this checkpoint's xxh3,
    else the config's. A ``tuned.json`` of another checkpoint is ignored with a warning.

    ``checkpoint_xxh3`` is the file's hash when the caller has just computed it (not hashed again).
    ``clustering`` is ``auto``, ``on`` or ``off`` (see the module's doc); the numbers of speakers, when
    given, are obeyed by clustering, and ``chunk_s``/``chunk_hop_s`` replace the run's chunks.
    """
    ckpt = load_checkpoint(path)  # first: a missing or foreign file gets its clear error
    try:  # the pipeline must be able to compute these features for new audio
        FeatureConfig(**ckpt["feature_config"])
    except (TypeError, AgencerdasError) as exc:
        raise AgencerdasError(f"{path}: not a usable agencerdas checkpoint: its feature_config: {exc}") from None
    digest = checkpoint_xxh3 or hash_file(Path(path))
    config = TrainConfig.from_dict(ckpt["config"])  # checked by load_checkpoint
    if chunk_s is not None and chunk_hop_s is None:  # a chunk length alone: half-overlapping chunks
        chunk_hop_s = chunk_s / 2
    chunks = {k: v for k, v in (("chunk_s", chunk_s), ("chunk_hop_s", chunk_hop_s)) if v is not None}
    if chunks:  # the run's own fields checked them; these get the same checks
        config = TrainConfig.from_dict({**config.to_dict(), **chunks})
    model = build_model(config, ckpt["feature_config"]["n_mels"])
    load_weights(model, {k: v for k, v in ckpt["model"].items() if not k.startswith(TRAINING_ONLY)}, path)
    model.to(device).eval()
    clustered = _clustering(clustering, config, path)
    tuned = _tuned_for(Path(path), digest, clustered)
    shift = config.downsample * ckpt["feature_config"]["hop_length"] / ckpt["feature_config"]["sample_rate"]
    inference = inference_settings(config, shift, clustered, tuned, num_speakers=num_speakers,
                                   min_speakers=min_speakers, max_speakers=max_speakers)
    return LoadedModel(model, config, ckpt["feature_config"], Normalizer.from_dict(ckpt["normalizer"]), ckpt, inference,
                       digest, Path(path), tuned)


def _clustering(mode: str, config: TrainConfig, path: Path) -> bool:
    """Whether inference clusters (``mode`` auto | on | off) with a model of ``config``."""
    if mode not in ("auto", "on", "off"):
        raise AgencerdasError(f"clustering must be auto, on or off, got {mode!r}")
    if mode == "on" and not config.embeds:
        raise AgencerdasError(f"{path} has no speaker-embedding head (trained with EMBED_LOSS_WEIGHT=0, or before "
                              "the head existed), so its speakers cannot be clustered: use --clustering off (or auto)")
    return config.embeds if mode == "auto" else mode == "on"


def _tuned_for(path: Path, checkpoint_xxh3: str, clustering: bool) -> dict | None:
    """The run's ``tuned.json`` if it was tuned with this very checkpoint file for this inference (clustering
    or stitching), else None."""
    tuned_path = path.parent / "tuned.json"
    if not tuned_path.is_file():
        return None
    tuned = json.loads(tuned_path.read_text())
    if tuned.get("checkpoint_xxh3") == checkpoint_xxh3 and tuned.get("clustering", False) == clustering:
        return tuned
    if tuned.get("checkpoint_xxh3") == checkpoint_xxh3:
        warnings.warn(f"{tuned_path} was tuned for {'clustering' if tuned.get('clustering') else 'stitching'} "
                      f"inference, and this one {'clusters' if clustering else 'stitches'}: using the run's configured "
                      f"settings; rerun `agencerdas evaluate --model {path} --tune` with this --clustering",
                      stacklevel=3)
        return None
    # Written before tuned settings named their checkpoint, or tuned on another one (last.pt, an older best.pt).
    if tuned.get("checkpoint_xxh3"):
        reason = (f"was tuned with another checkpoint file ({tuned.get('checkpoint')}, xxh3 "
                  f"{tuned['checkpoint_xxh3'][:12]}), not {path} (xxh3 {checkpoint_xxh3[:12]})")
    else:
        reason = f"names no checkpoint (written before tuned settings were bound to one), so it may not be {path}'s"
    warnings.warn(f"{tuned_path} {reason}: ignoring it and using the run's configured threshold and median width; "
                  f"rerun `agencerdas evaluate --model {path} --tune` for this checkpoint", stacklevel=3)
    return None
