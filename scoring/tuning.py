"""Tuning the pipeline on a labelled set: the values it decides with, chosen jointly against DER.

Every candidate is scored by running :func:`~scoring.pipeline.turns` itself: the decision threshold also
picks the slots that are clustered, so each candidate decision threshold re-clusters, and the DER recorded
for the winner is exactly the DER ``evaluate`` measures with it on the same recordings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import numpy as np

from agencerdas.stores.errors import AgencerdasError
from agencerdas.stores.segments import Segment

from .binarize import activity_to_segments
from .der import DERSettings, score
from .pipeline import Chunks, cluster_speakers, decide
from .settings import PipelineSettings

#: Candidates of ``evaluate --tune``.
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
MEDIANS = (1, 5, 11, 21)
#: Cosine distances (unit embeddings: 0 identical, 1 orthogonal).
CLUSTER_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

Scorer = Callable[[Mapping[str, list[Segment]], Mapping[str, list[Segment]],
                   Mapping[str, list[tuple[float, float]]] | None], float]


@dataclass
class TuningSet:
    """A labelled set as the pipeline sees it, by recording id.

    Attributes:
        outputs: :class:`~scoring.pipeline.Chunks` or stitched posteriors (n_frames, S) per recording.
        references: reference turns in seconds.
        uems: scored regions in seconds (None: everything).
        durations_s: each recording's duration (turns are clipped to it).
        speech: (n_frames,) bool VAD speech per recording, when the pipeline gates with a VAD.
    """

    outputs: Mapping[str, Chunks | np.ndarray]
    references: Mapping[str, list[Segment]]
    uems: Mapping[str, list[tuple[float, float]]] | None
    durations_s: Mapping[str, float]
    speech: Mapping[str, np.ndarray] | None = None


def der_scorer(settings: DERSettings) -> Scorer:
    """Overall DER of hypotheses against references (pyannote.metrics), as :func:`tune` minimises it."""
    def scorer(references, hypotheses, uems) -> float:
        return score(dict(references), dict(hypotheses), dict(uems) if uems else None, settings).overall["der"]

    return scorer


def _nearest_first(candidates: Sequence[float], configured: float) -> list[float]:
    """Candidates ordered by distance from the configured value: a tie keeps the value nearest it."""
    return sorted(dict.fromkeys([*candidates]), key=lambda value: (abs(value - configured), value))


def tune(data: TuningSet, settings: PipelineSettings, frame_shift_s: float, scorer: Scorer,
         thresholds: Sequence[float] = THRESHOLDS, medians: Sequence[int] = MEDIANS,
         cluster_thresholds: Sequence[float] = CLUSTER_THRESHOLDS) -> tuple[PipelineSettings, float]:
    """The settings (``settings`` with threshold, median width and cluster threshold replaced) of lowest
    ``scorer`` error on ``data``, and that error.

    Tuned without any requested number of speakers (the cluster threshold decides it). A powerset model's
    decisions take no threshold, an eigengap count no cluster threshold, stitching neither: those keep
    their configured values. Ties go to the candidate nearest the configured values.
    """
    if not thresholds or not medians or not cluster_thresholds:
        raise AgencerdasError("tuning needs at least one candidate of each value")
    free = replace(settings, num_speakers=None, min_speakers=None, max_speakers=None)
    clustered = free.clustering and free.count == "threshold"
    best: tuple[float, PipelineSettings] | None = None
    for cluster_threshold in _nearest_first(cluster_thresholds if clustered else (), free.cluster_threshold) or [
            free.cluster_threshold]:
        for threshold in _nearest_first(thresholds if free.max_overlap is None else (), free.threshold) or [
                free.threshold]:
            candidate = replace(free, threshold=threshold, cluster_threshold=cluster_threshold)
            # Clustering depends on the threshold (which slots speak), never on the median: once per pair.
            posteriors = {rec: cluster_speakers(out, candidate, frame_shift_s) if isinstance(out, Chunks) else out
                          for rec, out in data.outputs.items()}
            for median in _nearest_first(medians, free.median_frames):
                trial = replace(candidate, median_frames=int(median))
                hypotheses = {rec: activity_to_segments(
                    decide(post, trial, frame_shift_s, data.speech.get(rec) if data.speech else None).activity,
                    frame_shift_s, max_end_s=data.durations_s[rec]) for rec, post in posteriors.items()}
                error = float(scorer(data.references, hypotheses, data.uems))
                if best is None or error < best[0]:
                    best = (error, trial)
    assert best is not None
    return best[1], best[0]
