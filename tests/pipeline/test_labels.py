"""RTTM turns → base-rate frame activity."""

from __future__ import annotations

import numpy as np
import pytest

from agencerdas.pipeline.labels import canonical_annotation, frame_labels
from agencerdas.stores.segments import Segment

SHIFT = 0.01


def expected_frames(start_ms: int, end_ms: int, frames: int) -> np.ndarray:
    """Frames whose centre (t + 0.5) * 10 ms lies in [start, end), in exact integer milliseconds."""
    return np.array([start_ms <= 10 * t + 5 < end_ms for t in range(frames)], dtype=np.uint8)


def test_frame_centre_rule_on_the_brief_example():
    labels = frame_labels([Segment(0.105, 0.095, "a")], 40, SHIFT)
    # centres 0.105, 0.115, ..., 0.195 are inside [0.105, 0.2); 0.205 is not
    assert np.nonzero(labels.activity[:, 0])[0].tolist() == list(range(10, 20))


@pytest.mark.parametrize("start_ms", [0, 4, 5, 6, 15, 25, 35, 105, 115, 125, 135, 145, 155, 165, 575, 995])
@pytest.mark.parametrize("duration_ms", [1, 5, 10, 11, 95, 137])
def test_frame_centre_rule_at_millisecond_boundaries(start_ms, duration_ms):
    # RTTM times have millisecond resolution, so an edge often lies exactly on a frame centre:
    # the start is inclusive and the end exclusive, whatever the float rounding of start + duration.
    seg = Segment(start_ms / 1000, duration_ms / 1000, "a")
    activity = frame_labels([seg], 120, SHIFT).activity[:, 0]
    np.testing.assert_array_equal(activity, expected_frames(start_ms, start_ms + duration_ms, 120))


def test_overlap_and_speaker_order_by_first_appearance():
    turns = [
        Segment(0.5, 0.3, "zed"),  # listed first, but speaks second
        Segment(0.2, 0.5, "amy"),
        Segment(0.9, 0.2, "amy"),
        Segment(1.0, 0.2, "bob"),
    ]
    labels = frame_labels(turns, 150, SHIFT)
    assert labels.speakers == ["amy", "zed", "bob"]
    assert labels.activity.shape == (150, 3) and labels.activity.dtype == np.uint8
    act = labels.activity
    np.testing.assert_array_equal(act[:, 0], expected_frames(200, 700, 150) | expected_frames(900, 1100, 150))
    np.testing.assert_array_equal(act[:, 1], expected_frames(500, 800, 150))
    np.testing.assert_array_equal(act[:, 2], expected_frames(1000, 1200, 150))
    overlap = np.nonzero(act.sum(axis=1) == 2)[0]
    assert overlap.tolist() == list(range(50, 70)) + list(range(100, 110))
    assert labels.clipped_seconds == 0


def test_every_speaker_keeps_a_column():
    """Six speakers, six columns in first-appearance order: no cap at feature time (a training window
    keeps the speakers active in it)."""
    turns = [Segment(0.1 * i, 0.3, name) for i, name in enumerate("fedcba")]
    labels = frame_labels(turns, 120, SHIFT)
    assert labels.speakers == list("fedcba") and labels.activity.shape == (120, 6)
    for column in range(6):
        np.testing.assert_array_equal(labels.activity[:, column], expected_frames(100 * column, 100 * column + 300, 120))


def test_speech_past_the_end_is_clipped_and_reported():
    turns = [Segment(0.5, 1.0, "a"), Segment(1.2, 0.3, "b"), Segment(2.0, 0.5, "a")]
    labels = frame_labels(turns, 100, SHIFT)  # the audio is 1.0 s long
    assert labels.clipped_seconds == pytest.approx(0.5 + 0.3 + 0.5)
    assert labels.activity.shape == (100, 2)
    np.testing.assert_array_equal(labels.activity[:, 0], expected_frames(500, 1000, 100))
    assert not labels.activity[:, 1].any()
    assert labels.speakers == ["a", "b"]  # kept: the annotation names them


def test_no_turns_gives_no_columns():
    labels = frame_labels([], 10, SHIFT)
    assert labels.speakers == [] and labels.activity.shape == (10, 0)


def test_canonical_annotation_ignores_order_and_sub_millisecond_noise():
    a = canonical_annotation([Segment(1.5, 0.25, "x"), Segment(0.1, 0.2, "y")], [(0.0, 10.0)])
    b = canonical_annotation([Segment(0.1, 0.2, "y"), Segment(1.5000001, 0.25, "x")], [(0.0, 10.0)])
    assert a == b
    assert canonical_annotation([Segment(1.5, 0.26, "x"), Segment(0.1, 0.2, "y")], [(0.0, 10.0)]) != a
    assert canonical_annotation([Segment(1.5, 0.25, "x"), Segment(0.1, 0.2, "y")], None) != a
