"""RTTM speaker turns → frame-level speaker activity at the base frame rate."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .rttm import Segment


@dataclass(frozen=True)
class LabelConfig:
    """Everything that changes stored labels besides the annotation and the features key.

    Nothing is chosen today: labels keep every speaker of a recording, and each training window
    keeps the ones active in it (``training.windows``). Its dict enters the labels key and the
    view, so a setting added here redoes labels only.
    """

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FrameLabels:
    """Activity (frames, speakers) uint8, one column per annotated speaker, and the annotated
    speech that lies past the end of the audio (seconds), for the report."""

    activity: np.ndarray
    speakers: list[str]
    clipped_seconds: float = 0.0


def canonical_annotation(segments: list[Segment], uem: list[tuple[float, float]] | None) -> dict:
    """What of an annotation enters the labels key: sorted turns (ms resolution) and UEM regions.

    Rounding to milliseconds keeps ``1.5`` and ``1.500`` one key while any real edit changes it.
    """
    return {
        "turns": [[round(s.start * 1000), round(s.duration * 1000), s.speaker] for s in sorted(segments)],
        "uem": [[round(a * 1000), round(b * 1000)] for a, b in sorted(uem)] if uem else None,
    }


def frame_labels(segments: list[Segment], frames: int, frame_shift_s: float) -> FrameLabels:
    """Speaker activity per base frame, one column per speaker of ``segments`` (none without turns).

    Frame t is active for a speaker when one of its turns covers the frame centre
    (t + 0.5) * frame_shift_s seconds. Columns are ordered by first appearance; speech
    past the end of the audio is clipped and reported.
    """
    order: list[str] = []
    for seg in sorted(segments):
        if seg.speaker not in order:
            order.append(seg.speaker)
    activity = np.zeros((frames, len(order)), dtype=np.uint8)
    duration = frames * frame_shift_s
    clipped_seconds = 0.0
    for seg in segments:
        clipped_seconds += max(0.0, seg.end - max(seg.start, duration))
        # first/last frame whose centre lies in [start, end); positions in frames are rounded to
        # 1e-6 so float noise (0.035 / 0.01 = 3.4999...) cannot move a turn edge that is on a centre
        first = max(0, int(np.ceil(round(seg.start / frame_shift_s - 0.5, 6))))
        last = min(frames, int(np.ceil(round(seg.end / frame_shift_s - 0.5, 6))))
        if last > first:
            activity[first:last, order.index(seg.speaker)] = 1
    return FrameLabels(activity, order, clipped_seconds)
