"""Diarization error rate, computed by ``pyannote.metrics`` and reported per recording.

The arithmetic is pyannote.metrics' own (:class:`DiarizationErrorRate`: optimal
speaker mapping, collars, overlap handling); this module only converts the
project's :class:`~pipeline.rttm.Segment` lists into pyannote annotations, passes
every scored region explicitly so pyannote never has to guess it, and lays the
components out as a report.

Conventions
-----------
* ``DERSettings.collar_s`` is the forgiveness collar on **each side** of a
  reference boundary (the NIST md-eval convention, 0.25 s). pyannote.metrics'
  ``collar`` is the *total* width centred on the boundary, so it receives
  ``2 * collar_s``.
* Overlapped speech is scored unless ``skip_overlap`` is set.
* All durations are in seconds; rates are fractions of the scored reference
  speech (0.12 means 12 %).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pyannote.core import Annotation, Timeline
from pyannote.core import Segment as CoreSegment
from pyannote.metrics.diarization import DiarizationErrorRate

from agencerdas.stores.segments import Segment
from agencerdas.stores.errors import AgencerdasError

# pyannote.metrics component names, mapped to the report's keys.
_COMPONENTS = {
    "missed detection": "missed_s",
    "false alarm": "false_alarm_s",
    "confusion": "confusion_s",
    "total": "reference_s",
}


@dataclass(frozen=True)
class DERSettings:
    """How DER is scored.

    Attributes:
        collar_s: seconds excluded on each side of every reference segment
            boundary (0.25 is the usual NIST setting; 0 scores every frame).
        skip_overlap: exclude regions where two or more reference speakers talk.
            Off by default: overlapped speech is part of the task.
    """

    collar_s: float = 0.25
    skip_overlap: bool = False

    def __post_init__(self) -> None:
        if not self.collar_s >= 0.0:
            raise AgencerdasError(f"DER collar_s={self.collar_s} must be a non-negative number of seconds")

    @property
    def pyannote_collar(self) -> float:
        """The ``collar`` argument of pyannote.metrics: total width, both sides together."""
        return 2.0 * self.collar_s


@dataclass
class DERReport:
    """Scoring result.

    Attributes:
        overall: components accumulated over all recordings (see :func:`score` for keys).
        per_recording: the same keys for each recording id.
        settings: the settings used.
    """

    overall: dict[str, float]
    per_recording: dict[str, dict[str, float]]
    settings: DERSettings = field(default_factory=DERSettings)

    def to_dict(self) -> dict:
        """A JSON-serialisable copy (plain floats, recordings sorted)."""
        return {
            "settings": {**asdict(self.settings), "pyannote_collar": self.settings.pyannote_collar},
            "overall": {key: float(value) for key, value in self.overall.items()},
            "per_recording": {
                rec: {key: float(value) for key, value in parts.items()}
                for rec, parts in sorted(self.per_recording.items())
            },
        }

    def table(self) -> str:
        """A plain-text table: one line per recording (sorted), the overall line last."""
        rows = sorted(self.per_recording.items()) + [("OVERALL", self.overall)]
        width = max(len("recording"), *(len(name) for name, _ in rows))
        header = (
            f"{'recording':<{width}}  {'DER%':>7}  {'miss%':>7}  {'FA%':>7}  {'conf%':>7}  {'speech_s':>10}"
        )
        lines = [
            f"collar {self.settings.collar_s:g} s each side, overlap "
            f"{'skipped' if self.settings.skip_overlap else 'scored'}",
            header,
            "-" * len(header),
        ]
        for name, parts in rows:
            if name == "OVERALL":
                lines.append("-" * len(header))
            lines.append(
                f"{name:<{width}}  {100 * parts['der']:7.2f}  {100 * parts['missed_rate']:7.2f}  "
                f"{100 * parts['false_alarm_rate']:7.2f}  {100 * parts['confusion_rate']:7.2f}  "
                f"{parts['reference_s']:10.2f}"
            )
        return "\n".join(lines)


def to_annotation(segments: list[Segment], uri: str) -> Annotation:
    """A pyannote Annotation with one track per segment, labelled by speaker.

    Each segment gets its own track id so that two overlapping turns of the same
    speaker (legal in RTTM) are both kept instead of one overwriting the other.
    """
    annotation = Annotation(uri=uri)
    for track, seg in enumerate(segments):
        annotation[CoreSegment(seg.start, seg.end), track] = seg.speaker
    return annotation


def to_timeline(regions: list[tuple[float, float]], uri: str) -> Timeline:
    """A pyannote Timeline of ``(start, end)`` regions in seconds (e.g. a UEM)."""
    return Timeline([CoreSegment(start, end) for start, end in regions], uri=uri)


def _rate(part: float, total: float) -> float:
    # Same convention as pyannote's DER when there is no reference speech:
    # 0 if nothing went wrong, 1 (100 %) otherwise, so the parts still add up to DER.
    if total > 0.0:
        return part / total
    return 0.0 if part == 0.0 else 1.0


def _summary(components: dict[str, float], der: float) -> dict[str, float]:
    parts = {key: float(components[name]) for name, key in _COMPONENTS.items()}
    total = parts["reference_s"]
    return {
        "der": float(der),
        **parts,
        "missed_rate": _rate(parts["missed_s"], total),
        "false_alarm_rate": _rate(parts["false_alarm_s"], total),
        "confusion_rate": _rate(parts["confusion_s"], total),
    }


def _check_same_recordings(references: dict, hypotheses: dict) -> None:
    no_reference = sorted(set(hypotheses) - set(references))
    if no_reference:
        raise AgencerdasError(
            f"hypothesis for recording(s) {', '.join(no_reference)} has no reference: "
            "add their reference RTTM or drop them from the hypotheses"
        )
    no_hypothesis = sorted(set(references) - set(hypotheses))
    if no_hypothesis:
        raise AgencerdasError(
            f"reference recording(s) {', '.join(no_hypothesis)} have no hypothesis: "
            "run inference on them (an empty segment list counts as a hypothesis of silence)"
        )


def score(
    references: dict[str, list[Segment]],
    hypotheses: dict[str, list[Segment]],
    uems: dict[str, list[tuple[float, float]]] | None = None,
    settings: DERSettings = DERSettings(),
) -> DERReport:
    """Diarization error rate of ``hypotheses`` against ``references`` with pyannote.metrics.

    Args:
        references: reference turns per recording id (seconds).
        hypotheses: system turns per recording id; an empty list means the
            system found no speech. Must have the same recording ids as
            ``references``.
        uems: scored ``(start, end)`` regions in seconds per recording id. A
            recording absent from it (or ``uems=None``) is scored on
            ``[0, latest end of reference or hypothesis]``; ids not in
            ``references`` are ignored, so a corpus-wide UEM can be passed.
        settings: collar and overlap handling.

    Returns:
        A :class:`DERReport` whose ``overall`` and ``per_recording`` dicts hold
        ``der`` (fraction), ``missed_s``, ``false_alarm_s``, ``confusion_s``,
        ``reference_s`` (scored reference speech, overlap counted once per
        speaker), and ``missed_rate``, ``false_alarm_rate``, ``confusion_rate``
        (fractions of ``reference_s``; the three rates sum to ``der``).

    Raises:
        AgencerdasError: there is nothing to score, or a recording has a
        hypothesis but no reference, or the other way round.
    """
    if not references and not hypotheses:
        raise AgencerdasError("nothing to score: no reference and no hypothesis recordings were given")
    _check_same_recordings(references, hypotheses)
    uems = uems or {}
    metric = DiarizationErrorRate(collar=settings.pyannote_collar, skip_overlap=settings.skip_overlap)
    per_recording: dict[str, dict[str, float]] = {}
    for rec in sorted(references):
        reference, hypothesis = references[rec], hypotheses[rec]
        if rec in uems:
            regions = uems[rec]
        else:
            # Explicit extent from 0: pyannote would otherwise approximate the UEM
            # by the union of the two extents (and warn about it).
            end = max((seg.end for seg in [*reference, *hypothesis]), default=0.0)
            regions = [(0.0, end)]
        components = metric(
            to_annotation(reference, rec),
            to_annotation(hypothesis, rec),
            uem=to_timeline(regions, rec),
            detailed=True,
        )
        per_recording[rec] = _summary(components, components[metric.metric_name()])
    overall = _summary(metric[:], abs(metric))
    return DERReport(overall=overall, per_recording=per_recording, settings=settings)


def overlap_regions(segments: list[Segment], regions: list[tuple[float, float]], uri: str = "rec") -> list[tuple[float, float]]:
    """(start, end) seconds where two or more speakers of ``segments`` talk at once, inside ``regions``
    (a UEM): the scored regions of the DER on overlapped speech alone."""
    crossed = to_annotation(segments, uri).get_overlap()
    return [(segment.start, segment.end) for segment in crossed.crop(to_timeline(regions, uri), mode="intersection")]
