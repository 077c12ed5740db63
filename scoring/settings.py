"""The settings of the one diarization pipeline, every step of it in one dataclass.

audio -> features -> segmentation (the model, on chunks) -> speaker embeddings (the model's head, or a
pretrained encoder on the audio) -> clustering (a threshold or the eigengap decides the count) ->
reconstruction (overlap-add) -> decisions (threshold / powerset, median, optional VAD gate) -> turns.

``tuned.json`` records all of it with the DER it measured (:meth:`PipelineSettings.tuned_record`), and a
pipeline refuses values tuned for another one (:meth:`PipelineSettings.mismatch`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from agencerdas.stores.errors import AgencerdasError

from .binarize import binarize
from .cluster import speaker_bounds

#: Speaker-count rules of clustering: a cosine-distance threshold, or the eigengap of the slots' affinity
#: (NME-SC, as NeMo's diarizer estimates it; the threshold is then unused).
COUNT_RULES = ("threshold", "eigengap")
#: Voice-activity gates of the decisions: none, or Silero VAD on the audio (a frame is speech only where the
#: model and the VAD agree).
VAD_CHOICES = ("none", "silero")
#: The fields that make a pipeline what it is: values tuned under other ones are refused, not applied.
STRUCTURE = ("window", "overlap", "fill_speech", "max_overlap", "clustering", "embeddings", "count", "vad")
#: The values ``evaluate --tune`` chooses.
TUNED = ("threshold", "median_frames", "cluster_threshold")


@dataclass
class PipelineSettings:
    """Every setting of the diarization pipeline.

    Attributes:
        window: chunk length in model frames (stitching: the training window; clustering: the chunks').
        overlap: fraction of a chunk shared by consecutive chunks, in [0, 1).
        threshold: a speaker is active in a frame when its posterior exceeds this; also which chunk
            slots speak (and are clustered).
        median_frames: odd width, in model frames, of the median filter on each speaker's decisions.
        fill_speech: frames where someone probably speaks but no speaker passes the threshold go to
            the most probable speaker (:func:`~scoring.binarize.binarize`).
        max_overlap: None for a multilabel model; K for a powerset model (decisions: the most probable
            set of at most K speakers; threshold and fill_speech unused).
        clustering: chunks' slots are clustered across the recording by their embeddings (any number of
            speakers), instead of stitched by their overlaps (at most the model's slots).
        embeddings: where slot embeddings come from: ``head`` (the model's), ``ge2e`` (resemblyzer's
            pretrained GE2E encoder on the audio where the slot speaks alone) or a TorchScript file.
        count: how clustering decides the number of speakers: ``threshold`` or ``eigengap``.
        cluster_threshold: average cosine distance above which clusters stay apart (count ``threshold``).
        vad: ``none`` or ``silero`` (a frame is speech only where the VAD agrees).
        num_speakers, min_speakers, max_speakers: the number of speakers when known, or bounds on it.
    """

    window: int = 500
    overlap: float = 0.5
    threshold: float = 0.5
    median_frames: int = 11
    fill_speech: bool = True
    max_overlap: int | None = None
    clustering: bool = False
    embeddings: str = "head"
    count: str = "threshold"
    cluster_threshold: float = 0.6
    vad: str = "none"
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None

    def __post_init__(self) -> None:
        if self.window < 1:
            raise AgencerdasError(f"chunk of {self.window} model frames: a chunk needs at least 1 frame "
                                  "(--chunk-s too short for this model's frame rate)")
        if not 0.0 <= self.overlap < 1.0:
            raise AgencerdasError(f"chunk overlap {self.overlap} must be in [0, 1) (--chunk-hop-s must be above 0 "
                                  "and at most --chunk-s)")
        if not 0.0 <= self.threshold <= 1.0:
            raise AgencerdasError(f"decision threshold {self.threshold} must be in [0, 1]")
        if self.median_frames < 1 or self.median_frames % 2 == 0:
            raise AgencerdasError(f"median_frames={self.median_frames} must be an odd number >= 1")
        if self.count not in COUNT_RULES:
            raise AgencerdasError(f"speaker-count rule {self.count!r} is not one of {', '.join(COUNT_RULES)}")
        if self.vad not in VAD_CHOICES:
            raise AgencerdasError(f"vad {self.vad!r} is not one of {', '.join(VAD_CHOICES)}")
        if math.isnan(self.cluster_threshold) or not 0.0 <= self.cluster_threshold <= 2.0:
            raise AgencerdasError(f"cluster threshold {self.cluster_threshold} must be a cosine distance in [0, 2]")
        counts = (self.num_speakers, self.min_speakers, self.max_speakers)
        if any(value is not None for value in counts) and not self.clustering:
            raise AgencerdasError("a number of speakers needs clustering inference (--clustering on, and a model "
                                  "trained with the embedding head or --embeddings ge2e); stitching finds at most "
                                  "the model's slots")
        if self.embeddings != "head" and not self.clustering:
            raise AgencerdasError(f"--embeddings {self.embeddings} needs clustering (--clustering on): stitching "
                                  "uses no embeddings")
        speaker_bounds(*counts)  # checked before any audio is read

    @property
    def step(self) -> int:
        """Hop between chunk starts in frames: ``window * (1 - overlap)``, at least 1."""
        return max(1, round(self.window * (1.0 - self.overlap)))

    @property
    def slot_threshold(self) -> float:
        """Posterior above which a chunk slot speaks (clustering; a powerset model's posteriors are
        marginals whose decisions take no threshold: one half)."""
        return 0.5 if self.max_overlap is not None else self.threshold

    def binarize(self, posteriors: np.ndarray) -> np.ndarray:
        """(n, K) bool activity of ``posteriors`` (n, K) by the threshold / powerset rule and the median."""
        return binarize(posteriors, self.threshold, self.median_frames, self.fill_speech, self.max_overlap)

    def tuned_record(self) -> dict:
        """What tuned.json records of these settings: every field but the numbers of speakers a caller asks for."""
        return {k: v for k, v in asdict(self).items() if k not in ("num_speakers", "min_speakers", "max_speakers")}

    def mismatch(self, record: dict) -> list[str]:
        """The structural fields (:data:`STRUCTURE`) on which ``record`` (a tuned.json's settings) differs from
        these settings, as ``name: tuned X, here Y``; empty when its tuned values apply here."""
        return [f"{name}: tuned {record.get(name)!r}, here {getattr(self, name)!r}" for name in STRUCTURE
                if record.get(name) != getattr(self, name)]

    def with_tuned(self, record: dict) -> "PipelineSettings":
        """These settings with the values tuned in ``record`` (:data:`TUNED`)."""
        return replace(self, **{name: record[name] for name in TUNED if name in record})

    def describe(self) -> str:
        """The pipeline in words, for reports."""
        if self.max_overlap is not None:
            decisions = (f"powerset decisions (the most probable set of at most {self.max_overlap} speakers), "
                         f"median {self.median_frames} frames")
        else:
            decisions = f"threshold {self.threshold}, median {self.median_frames} frames, fill_speech {self.fill_speech}"
        if self.vad != "none":
            decisions += f", speech gated by {self.vad} VAD"
        if not self.clustering:
            return f"stitched chunks of {self.window} frames; {decisions}"
        given = ", ".join(f"{name} {value}" for name, value in (("speakers", self.num_speakers),
                          ("at least", self.min_speakers), ("at most", self.max_speakers)) if value is not None)
        count = (f"cosine threshold {self.cluster_threshold:g}" if self.count == "threshold" else "eigengap count")
        return (f"clustered chunks of {self.window} frames (hop {self.step}; {self.embeddings} embeddings, {count}"
                f"{', ' + given if given else ''}); {decisions}")

