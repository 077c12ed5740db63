"""What every evaluation does once the pipeline's inputs are known: turns for each recording, RTTMs, DER
(overall and on overlapped speech), the speaker count, and the printed table; shared by ``evaluate`` with a
model and ``evaluate --pretrained`` (no model)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agencerdas.pipeline.rttm import unique_file_names, write_rttm
from agencerdas.scoring.cluster import speaker_count_notes
from agencerdas.scoring.der import DERReport, DERSettings, overlap_regions, score
from agencerdas.scoring.pipeline import turns
from agencerdas.scoring.settings import PipelineSettings
from agencerdas.scoring.tuning import TuningSet


@dataclass
class Scored:
    """A set's hypotheses and scores.

    Attributes:
        hypotheses: turns in seconds by recording id; ``posteriors``: (frames, K) by recording id.
        der: the DER report; ``overlap``: DER on overlapped speech alone (None without overlap).
        counts: the speaker count against the reference (:func:`speaker_counts`).
        unmet: recording id -> why a requested number of speakers was not given.
    """

    hypotheses: dict
    posteriors: dict
    der: DERReport
    overlap: dict | None
    counts: dict
    unmet: dict[str, str]

    def table(self, pipeline_line: str) -> str:
        """The printed summary: the DER table, the pipeline used, the speaker count, unmet requests, overlap."""
        n = len(self.hypotheses)
        text = (f"{self.der.table()}\n{pipeline_line}\nspeakers per recording: {self.counts['exact']} of {n} right, "
                f"mean absolute error {self.counts['mean_abs_error']:.2f} (found minus true "
                f"{self.counts['mean_error']:+.2f})")
        if self.unmet:
            first = next(iter(self.unmet))
            text += (f"\nspeakers asked for (--num/--min/--max-speakers) not given on {len(self.unmet)} of {n} "
                     f"recording(s) (report.json speaker_count_unmet), e.g. {first}: {self.unmet[first]}")
        if self.overlap:
            text += (f"\noverlapped speech alone ({self.overlap['recordings']} recordings, no collar): DER "
                     f"{100 * self.overlap['der']:.2f}% = {100 * self.overlap['missed_rate']:.2f} missed + "
                     f"{100 * self.overlap['false_alarm_rate']:.2f} false alarm + "
                     f"{100 * self.overlap['confusion_rate']:.2f} confusion")
        return text


def score_set(data: TuningSet, settings: PipelineSettings, frame_shift_s: float, der_settings: DERSettings,
              rttm_dir: Path) -> Scored:
    """Turns of every recording of ``data`` by the pipeline (:func:`scoring.pipeline.turns`), written as RTTM
    into ``rttm_dir``, and scored against the references."""
    hyps, posteriors, unmet = {}, {}, {}
    names = dict(zip(data.outputs, unique_file_names(list(data.outputs), ".rttm")))
    for rec_id, output in data.outputs.items():
        speech = data.speech[rec_id] if data.speech else None
        with speaker_count_notes() as notes:
            hyps[rec_id], decided = turns(output, settings, frame_shift_s, data.durations_s[rec_id], speech)
        if notes:
            unmet[rec_id] = "; ".join(notes)
        posteriors[rec_id] = decided.posteriors
        write_rttm(rttm_dir / names[rec_id], rec_id, hyps[rec_id])
    refs, uems = data.references, data.uems
    return Scored(hyps, posteriors, score(dict(refs), hyps, dict(uems) if uems else None, der_settings),
                  overlap_der(refs, hyps, uems), speaker_counts(refs, hyps), unmet)


def speaker_counts(refs: dict, hyps: dict) -> dict:
    """How many speakers the hypothesis finds against the reference, per recording: ``per_recording``
    {id: [true, found]}, ``exact`` (recordings right), ``mean_abs_error`` and ``mean_error`` (found - true)."""
    per = {rec: [len({s.speaker for s in refs[rec]}), len({s.speaker for s in hyps[rec]})] for rec in refs}
    errors = np.array([found - true for true, found in per.values()], dtype=float)
    return {"per_recording": per, "exact": int((errors == 0).sum()), "mean_abs_error": float(np.abs(errors).mean()),
            "mean_error": float(errors.mean())}


def overlap_der(refs: dict, hyps: dict, uems: dict) -> dict | None:
    """DER on overlapped speech alone: scored only where two or more reference speakers talk (inside each
    UEM), with no collar (a collar around every turn boundary would remove most of such short regions);
    None when no scored recording has overlap."""
    regions = {rec: overlap_regions(refs[rec], uems[rec], rec) for rec in refs}
    scored = [rec for rec, r in regions.items() if r]
    if not scored:
        return None
    report = score({r: refs[r] for r in scored}, {r: hyps[r] for r in scored}, {r: regions[r] for r in scored},
                   DERSettings(collar_s=0.0))
    return {**report.overall, "recordings": len(scored)}
