"""A trained model loaded from its checkpoint, with what feeding it needs (config, normaliser,
inference settings).

``evaluate --tune`` writes ``tuned.json`` next to the checkpoint it tuned: every field of the pipeline's
settings (:meth:`scoring.settings.PipelineSettings.tuned_record`: chunks in model frames, decisions,
clustering, embeddings, count rule, VAD) and the DER it measured with them::

    {"window": int, "overlap": float, "threshold": float, "median_frames": int, "fill_speech": bool,
     "max_overlap": int | null, "clustering": bool, "embeddings": str, "count": str, "cluster_threshold": float,
     "vad": str, "der": float, "checkpoint": "best.pt", "checkpoint_xxh3": str, "tuned_on_scored": bool,
     "data": {"view": str, "split": str, "audio_dir": str | null, "recordings": int,
              "features": [features key, ...]}}

Other checkpoints of the run share the directory (``last.pt``, a later ``best.pt``), so the settings apply
only to the file whose xxh3 they name, and only to the pipeline they were tuned for: values tuned with
other chunks, another embedding source, count rule or VAD are refused with a warning, never applied.

Clustering (``--clustering``): ``auto`` clusters with a model that has the speaker-embedding head
and stitches with one that has not (checkpoints written before the head existed).
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from agencerdas.pipeline import FeatureConfig
from agencerdas.stores import hash_file
from agencerdas.stores.errors import AgencerdasError

from agencerdas.scoring.pipeline import Chunks, cluster_speakers
from agencerdas.scoring.settings import PipelineSettings
from agencerdas.scoring.stitch import chunk_starts
from agencerdas.training.checkpoint import load_checkpoint, load_weights
from agencerdas.training.config import TrainConfig
from agencerdas.training.model import TRAINING_ONLY, build_model
from agencerdas.training.posteriors import pipeline_settings, recording_chunks, recording_posteriors
from agencerdas.training.windows import Normalizer, WindowFormat

from .tuned import read_tuned
from .voices import Decoded, Voices, encoder_embeddings, speech_frames

#: Clustering chunks accepted, in seconds: a slot's embedding pools a turn of its chunk, which a chunk of a
#: few frames does not hold; the model's attention memory grows with the square of a chunk's frames.
MIN_CHUNK_S, MAX_CHUNK_S = 1.0, 300.0
#: Most chunks covering one frame (chunk_s / chunk_hop_s): the model's time and the chunks' posteriors grow with it.
MAX_CHUNKS_PER_FRAME = 10
#: Most chunk slots one recording may bring to clustering, counted before the model runs (chunks x slots): the
#: clustering's distance matrix holds their square in float64 (8192 slots: 0.5 GB), so the cap bounds its memory.
MAX_CLUSTER_SLOTS = 8192


@dataclass
class LoadedModel:
    """A trained model ready for inference, with everything needed to feed it."""

    model: torch.nn.Module
    config: TrainConfig
    feature_config: dict
    normalizer: Normalizer
    checkpoint: dict
    inference: PipelineSettings
    checkpoint_xxh3: str
    path: Path
    tuned: dict | None = None  # the tuned.json applied to ``inference``, None when the config's settings are used
    voices: Voices = field(default_factory=Voices)  # the pretrained components ``inference`` asks for

    @property
    def frame_shift_s(self) -> float:
        """Seconds per model frame."""
        return self.config.downsample * self.feature_config["hop_length"] / self.feature_config["sample_rate"]

    @property
    def window_format(self) -> WindowFormat:
        """How this model's input is cut from stored base-rate features."""
        return WindowFormat(self.normalizer, self.config.downsample, self.config.pooling)

    def outputs(self, predict, features, frames: int, settings: PipelineSettings | None = None) -> Chunks | np.ndarray:
        """What the model says of a whole recording of ``frames`` base frames, as ``settings`` (default: the
        pipeline's) run it: its :class:`~scoring.pipeline.Chunks` (clustering) or its stitched posteriors
        (model frames, S), for :func:`scoring.pipeline.turns`.

        ``predict`` is a :func:`training.posteriors.predictor` of this model. Raises AgencerdasError
        naming the checkpoint when the model's outputs are not finite: binarising or scoring NaN fails deep inside.
        """
        inf = settings or self.inference
        if not inf.clustering:
            return self._checked(recording_posteriors(predict, features, self.window_format, frames, inf.window,
                                                      inf.overlap))
        self._check_chunk_count(frames, inf)
        chunks = recording_chunks(predict, features, self.window_format, frames, inf.window, inf.overlap)
        self._checked(chunks.activity)
        self._checked(chunks.embeddings)
        return chunks

    def recording(self, predict, features, frames: int, audio: Decoded | None = None) -> tuple[Chunks | np.ndarray,
                                                                                             np.ndarray | None]:
        """:meth:`outputs` of a recording with what the pipeline's pretrained components hear in its ``audio``
        (its samples decoded once, see :class:`~inference.voices.Decoded`): the slots' embeddings from the
        encoder in place of the model's, and the VAD's (model frames,) bool speech (None without a VAD)."""
        outputs = self.outputs(predict, features, frames)
        if not self.voices.needs_audio:
            return outputs, None
        if audio is None:
            raise AgencerdasError(f"{self.inference.describe()} hears the audio itself, and only features were given")
        if self.voices.encoder is not None:
            outputs = encoder_embeddings(outputs, audio, self.voices.encoder, self.frame_shift_s)
        n_frames = -(-frames // self.config.downsample)
        speech = speech_frames(self.voices.vad, audio, self.frame_shift_s, n_frames) if self.voices.vad else None
        return outputs, speech

    def posteriors(self, predict, features, frames: int, window: int | None = None,
                   overlap: float | None = None) -> np.ndarray:
        """Speaker posteriors of a whole recording of ``frames`` base frames: (model frames, S) stitched, or
        (model frames, K) for the K speakers clustering finds; in chunks of ``window`` model frames
        overlapping by ``overlap`` (default: the pipeline's); see :meth:`outputs`."""
        inf = self.inference
        if window or overlap is not None:
            inf = replace(inf, window=window or inf.window, overlap=inf.overlap if overlap is None else overlap)
        out = self.outputs(predict, features, frames, inf)
        return cluster_speakers(out, inf, self.frame_shift_s) if inf.clustering else out

    def _check_chunk_count(self, frames: int, inf: PipelineSettings) -> None:
        """Refuse a recording of ``frames`` base frames whose chunks could bring more than
        :data:`MAX_CLUSTER_SLOTS` slots to clustering, before the model runs on it."""
        n_model = -(-frames // self.config.downsample)
        chunks = len(list(chunk_starts(n_model, inf.window, inf.step)))
        slots = chunks * self.config.max_speakers
        if slots > MAX_CLUSTER_SLOTS:
            hop_s = math.ceil(n_model * self.config.max_speakers / MAX_CLUSTER_SLOTS * self.frame_shift_s)
            raise AgencerdasError(
                f"{n_model * self.frame_shift_s / 3600:.1f} h of audio in chunks every {inf.step * self.frame_shift_s:g} s "
                f"is {chunks} chunks of {self.config.max_speakers} slots, more than the {MAX_CLUSTER_SLOTS} slots "
                f"clustering holds in memory ({8 * MAX_CLUSTER_SLOTS ** 2 / 2**30:.1f} GiB of distances, growing with "
                f"the square); give a longer --chunk-hop-s (about {hop_s} s or more for this recording), or split it")

    def _checked(self, values: np.ndarray) -> np.ndarray:
        if not np.isfinite(values).all():
            raise AgencerdasError(f"checkpoint {self.path} gives non-finite posteriors (NaN or inf) on this input; "
                                  "the model is broken (a diverged run?): use another checkpoint")
        return values


def load_model(path: Path, device: torch.device, checkpoint_xxh3: str | None = None, clustering: str = "auto",
               num_speakers: int | None = None, min_speakers: int | None = None, max_speakers: int | None = None,
               chunk_s: float | None = None, chunk_hop_s: float | None = None, embeddings: str | None = None,
               count: str | None = None, vad: str = "none") -> LoadedModel:
    """Model, config and normaliser from a checkpoint; threshold and median width from the
    run's ``tuned.json`` (written by ``evaluate --tune``) when it names this checkpoint's xxh3,
    else the config's. A ``tuned.json`` of another checkpoint is ignored with a warning.

    ``checkpoint_xxh3`` is the file's hash when the caller has just computed it (not hashed again).
    ``clustering`` is ``auto``, ``on`` or ``off`` (see the module's doc); the numbers of speakers, when
    given, are obeyed by clustering, and ``chunk_s``/``chunk_hop_s`` replace the run's chunks (whatever the
    embeddings: 30-s chunks every 15 s were best on validation for GE2E too, docs/results.md).
    ``embeddings``, ``count`` and ``vad``: see :class:`~scoring.settings.PipelineSettings`; the pretrained
    components they name are loaded here, once. ``embeddings`` None takes the run's ``EMBEDDINGS`` (``ge2e``
    for runs trained since it became the default, ``head`` for older runs, which so evaluate as before).
    """
    ckpt = load_checkpoint(path)  # first: a missing or foreign file gets its clear error
    try:  # the pipeline must be able to compute these features for new audio
        FeatureConfig(**ckpt["feature_config"])
    except (TypeError, AgencerdasError) as exc:
        raise AgencerdasError(f"{path}: not a usable agencerdas checkpoint: its feature_config: {exc}") from None
    config = TrainConfig.from_dict(ckpt["config"])  # checked by load_checkpoint
    shift = config.downsample * ckpt["feature_config"]["hop_length"] / ckpt["feature_config"]["sample_rate"]
    if embeddings is None:  # the run's own choice; stitching has no slots to embed
        embeddings = "head" if clustering == "off" else config.embeddings
    clustered = _clustering(clustering, config, path, embeddings)
    config = _with_chunks(config, chunk_s, chunk_hop_s, shift, clustered, path)  # checked before any work
    digest = checkpoint_xxh3 or hash_file(Path(path))
    inference = pipeline_settings(config, shift, clustered, num_speakers=num_speakers, min_speakers=min_speakers,
                                  max_speakers=max_speakers, embeddings=embeddings, count=count or "threshold", vad=vad)
    tuned = _tuned_for(Path(path), digest, inference, shift)
    if tuned is not None:
        inference = inference.with_tuned(tuned)
    model = build_model(config, ckpt["feature_config"]["n_mels"])
    load_weights(model, {k: v for k, v in ckpt["model"].items() if not k.startswith(TRAINING_ONLY)}, path)
    model.to(device).eval()
    return LoadedModel(model, config, ckpt["feature_config"], Normalizer.from_dict(ckpt["normalizer"]), ckpt, inference,
                       digest, Path(path), tuned, Voices.load(embeddings, vad, str(device)))


def _clustering(mode: str, config: TrainConfig, path: Path, embeddings: str) -> bool:
    """Whether inference clusters (``mode`` auto | on | off) with a model of ``config`` and slot embeddings from
    ``embeddings`` (a pretrained encoder gives any model's slots embeddings)."""
    if mode not in ("auto", "on", "off"):
        raise AgencerdasError(f"clustering must be auto, on or off, got {mode!r}")
    can = config.embeds or embeddings != "head"
    if mode == "on" and not can:
        raise AgencerdasError(f"{path} has no speaker-embedding head (trained with EMBED_LOSS_WEIGHT=0, or before "
                              "the head existed), so its speakers cannot be clustered on its own embeddings: use "
                              "--clustering off (or auto), or --embeddings ge2e")
    if mode == "off" and embeddings != "head":
        raise AgencerdasError(f"--embeddings {embeddings} embeds the chunks' speakers for clustering, and "
                              "--clustering off stitches instead: leave one of them out")
    return can if mode == "auto" else mode == "on"


def _with_chunks(config: TrainConfig, chunk_s, chunk_hop_s, frame_shift_s: float, clustered: bool,
                 path: Path) -> TrainConfig:
    """``config`` with the clustering chunks ``chunk_s``/``chunk_hop_s`` (seconds; None: the run's, and a
    length alone hops half of it) in place of the run's, checked before any work: clustering only,
    :data:`MIN_CHUNK_S` to :data:`MAX_CHUNK_S` long, every hop at least a model frame, at most a chunk and at
    least 1/:data:`MAX_CHUNKS_PER_FRAME` of one. AgencerdasError naming the flag otherwise."""
    given = {name: value for name, value in (("chunk_s", chunk_s), ("chunk_hop_s", chunk_hop_s)) if value is not None}
    if not given:
        return config
    named = {"chunk_s": "chunk_s (--chunk-s)", "chunk_hop_s": "chunk_hop_s (--chunk-hop-s)"}
    for name, value in given.items():
        if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
            raise AgencerdasError(f"{named[name]} must be a positive number of seconds, got {value!r}")
    if not clustered:
        raise AgencerdasError(
            f"{' and '.join(named[name] for name in given)} set the chunks whose speakers clustering joins, and "
            f"{path} stitches its training windows of {config.window} frames instead (no speaker-embedding head, or "
            "--clustering off): leave them out, or use --clustering on with a model trained with the head")
    chunk = float(given.get("chunk_s", config.chunk_s))
    hop = float(given.get("chunk_hop_s", chunk / 2 if "chunk_s" in given else config.chunk_hop_s))
    if "chunk_s" not in given:
        named["chunk_s"] = "the run's CHUNK_S"
    if not MIN_CHUNK_S <= chunk <= MAX_CHUNK_S:
        raise AgencerdasError(f"{named['chunk_s']} = {chunk:g} s must be from {MIN_CHUNK_S:g} to {MAX_CHUNK_S:g} s "
                              f"(a chunk holds whole turns, and the model's memory grows with its square)")
    low = max(chunk / MAX_CHUNKS_PER_FRAME, frame_shift_s)
    if not low <= hop <= chunk:
        raise AgencerdasError(
            f"{named['chunk_hop_s']} = {hop:g} s must be from {low:g} s (at least one model frame of "
            f"{frame_shift_s:g} s, and at most {MAX_CHUNKS_PER_FRAME} chunks over a frame) to {named['chunk_s']} = "
            f"{chunk:g} s (longer hops leave gaps between chunks)")
    return replace(config, chunk_s=chunk, chunk_hop_s=hop)


def _tuned_for(path: Path, checkpoint_xxh3: str, settings: PipelineSettings, frame_shift_s: float) -> dict | None:
    """The run's ``tuned.json`` if it was tuned with this very checkpoint file for this pipeline (the same
    chunks, clustering, embeddings, count rule and VAD: :meth:`~scoring.settings.PipelineSettings.mismatch`),
    else None with a warning; a malformed one is an AgencerdasError naming it (:func:`.tuned.read_tuned`)."""
    tuned_path = path.parent / "tuned.json"
    if not tuned_path.is_file():
        return None
    tuned = read_tuned(tuned_path, frame_shift_s)
    if tuned.get("checkpoint_xxh3") == checkpoint_xxh3:
        differs = settings.mismatch(tuned)
        if not differs:
            return tuned
        warnings.warn(f"{tuned_path} was tuned for another pipeline ({'; '.join(differs)}): not applied, using the "
                      f"run's configured settings; rerun `agencerdas evaluate --model {path} --tune` with these "
                      "options to tune this one", stacklevel=3)
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
