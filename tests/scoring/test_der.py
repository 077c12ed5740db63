"""DER scoring: agreement with pyannote.metrics, collar convention, UEM, report."""

from __future__ import annotations

import json
import warnings

import pytest
from pyannote.core import Annotation, Timeline
from pyannote.core import Segment as CoreSegment
from pyannote.metrics.diarization import DiarizationErrorRate

from agencerdas.pipeline.rttm import Segment, parse_rttm, write_rttm
from agencerdas.stores.errors import AgencerdasError
from agencerdas.scoring.der import DERSettings, score, to_annotation, to_timeline

REFERENCE = [
    Segment(0.0, 4.5, "alice"),
    Segment(3.8, 3.2, "bob"),  # overlaps alice on [3.8, 4.5]
    Segment(8.25, 2.0, "alice"),
    Segment(11.0, 3.5, "carol"),
]
HYPOTHESIS = [
    Segment(0.1, 4.0, "spk0"),
    Segment(4.0, 3.5, "spk1"),
    Segment(8.0, 1.0, "spk1"),  # confusion: alice labelled as bob's cluster
    Segment(9.0, 1.5, "spk0"),
    Segment(11.2, 2.0, "spk2"),
    Segment(15.0, 1.0, "spk2"),  # false alarm
]


def _direct(segments: list[tuple[float, float, str]], uri: str) -> Annotation:
    """An annotation built by hand, independently of scoring.der."""
    annotation = Annotation(uri=uri)
    for index, (start, end, label) in enumerate(segments):
        annotation[CoreSegment(start, end), index] = label
    return annotation


def test_der_matches_pyannote_through_rttm_round_trip(tmp_path):
    write_rttm(tmp_path / "ref.rttm", "rec 1", REFERENCE)
    write_rttm(tmp_path / "hyp.rttm", "rec 1", HYPOTHESIS)
    references, hypotheses = parse_rttm(tmp_path / "ref.rttm"), parse_rttm(tmp_path / "hyp.rttm")
    assert list(references) == ["rec_1"]

    report = score(references, hypotheses, {"rec_1": [(0.0, 17.0)]}, DERSettings(collar_s=0.25))

    metric = DiarizationErrorRate(collar=0.5, skip_overlap=False)
    expected = metric(
        _direct([(s.start, s.end, s.speaker) for s in REFERENCE], "rec_1"),
        _direct([(s.start, s.end, s.speaker) for s in HYPOTHESIS], "rec_1"),
        uem=Timeline([CoreSegment(0.0, 17.0)]),
        detailed=True,
    )
    got = report.per_recording["rec_1"]
    assert got["der"] == pytest.approx(expected["diarization error rate"])
    assert got["missed_s"] == pytest.approx(expected["missed detection"])
    assert got["false_alarm_s"] == pytest.approx(expected["false alarm"])
    assert got["confusion_s"] == pytest.approx(expected["confusion"])
    assert got["reference_s"] == pytest.approx(expected["total"])
    assert got["der"] > 0.05  # a case with real errors of every kind
    assert min(got["missed_s"], got["false_alarm_s"], got["confusion_s"]) > 0
    assert got["missed_rate"] + got["false_alarm_rate"] + got["confusion_rate"] == pytest.approx(got["der"])
    assert report.overall == pytest.approx(got)


def test_collar_is_seconds_on_each_side():
    # The hypothesis runs 0.4 s past the reference end at 10.0 s. A 0.25 s collar
    # on each side hides [9.75, 10.25], leaving 0.15 s of false alarm; a 0.25 s
    # *total* collar (pyannote's own meaning) would leave 0.275 s.
    references = {"r": [Segment(0.0, 10.0, "a")]}
    hypotheses = {"r": [Segment(0.0, 10.4, "x")]}
    uems = {"r": [(0.0, 20.0)]}

    per_side = score(references, hypotheses, uems, DERSettings(collar_s=0.25)).overall
    assert per_side["false_alarm_s"] == pytest.approx(0.15)
    assert per_side["reference_s"] == pytest.approx(9.5)  # collars at 0 s and 10 s each cut 0.25 s

    no_collar = score(references, hypotheses, uems, DERSettings(collar_s=0.0)).overall
    assert no_collar["false_alarm_s"] == pytest.approx(0.4)
    assert DERSettings(collar_s=0.25).pyannote_collar == 0.5


def test_errors_outside_the_uem_do_not_count():
    references = {"r": [Segment(1.0, 9.0, "a")]}
    hypotheses = {"r": [Segment(1.0, 9.0, "x"), Segment(15.0, 3.0, "x"), Segment(0.0, 0.5, "y")]}
    settings = DERSettings(collar_s=0.0)

    inside = score(references, hypotheses, {"r": [(0.6, 12.0)]}, settings).overall
    assert inside["der"] == 0.0

    whole = score(references, hypotheses, {"r": [(0.0, 20.0)]}, settings).overall
    assert whole["false_alarm_s"] == pytest.approx(3.5)


def test_without_uem_the_extent_is_explicit():
    references = {"r": [Segment(5.0, 5.0, "a")]}
    hypotheses = {"r": [Segment(5.0, 5.0, "x"), Segment(1.0, 1.0, "x")]}
    with warnings.catch_warnings():
        # pyannote warns when it has to approximate the UEM itself.
        warnings.simplefilter("error")
        report = score(references, hypotheses, None, DERSettings(collar_s=0.0))
        partial = score(references, hypotheses, {"other": [(0.0, 1.0)]}, DERSettings(collar_s=0.0))
    assert report.overall["false_alarm_s"] == pytest.approx(1.0)
    assert partial.overall == report.overall


def test_skip_overlap_excludes_overlapped_reference():
    references = {"r": [Segment(0.0, 6.0, "a"), Segment(4.0, 4.0, "b")]}
    hypotheses = {"r": [Segment(0.0, 8.0, "x")]}
    scored = score(references, hypotheses, None, DERSettings(collar_s=0.0)).overall
    skipped = score(references, hypotheses, None, DERSettings(collar_s=0.0, skip_overlap=True)).overall
    assert scored["missed_s"] == pytest.approx(2.0)
    assert skipped["missed_s"] == 0.0
    assert skipped["reference_s"] == pytest.approx(6.0)


def test_mismatched_recordings_name_the_recording():
    with pytest.raises(AgencerdasError, match="only_hyp"):
        score({"a": []}, {"a": [], "only_hyp": []}, None)
    with pytest.raises(AgencerdasError, match="only_ref"):
        score({"a": [], "only_ref": []}, {"a": []}, None)
    with pytest.raises(AgencerdasError, match="nothing to score"):
        score({}, {}, None)
    with pytest.raises(AgencerdasError, match="collar"):
        DERSettings(collar_s=-1.0)


def test_report_per_recording_dict_and_table():
    references = {"b": [Segment(0.0, 10.0, "s")], "a": [Segment(0.0, 4.0, "s")]}
    hypotheses = {"b": [Segment(0.0, 5.0, "h")], "a": [Segment(0.0, 4.0, "h")]}
    report = score(references, hypotheses, None, DERSettings(collar_s=0.0))

    assert report.per_recording["a"]["der"] == 0.0
    assert report.per_recording["b"]["der"] == pytest.approx(0.5)
    # Overall DER weights recordings by their reference speech, not equally.
    assert report.overall["der"] == pytest.approx(5.0 / 14.0)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["settings"]["pyannote_collar"] == 0.0
    assert list(data["per_recording"]) == ["a", "b"]

    lines = report.table().splitlines()
    names = [line.split()[0] for line in lines[3:] if not line.startswith("-")]
    assert names == ["a", "b", "OVERALL"]
    assert "35.71" in lines[-1]


def test_annotation_and_timeline_conversion():
    annotation = to_annotation([Segment(0.0, 2.0, "a"), Segment(1.0, 2.0, "a")], "u")
    assert annotation.uri == "u"
    assert len(list(annotation.itertracks())) == 2  # same-speaker overlap is kept
    timeline = to_timeline([(0.0, 1.0), (2.0, 3.5)], "u")
    assert timeline.duration() == pytest.approx(2.5)
