"""RTTM speaker turns → frame-level speaker activity at the base frame rate."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from stores.errors import AgencerdasError

from .rttm import Segment


@dataclass(frozen=True)
class LabelConfig:
    """Everything that changes stored labels besides the annotation and the features key."""

    max_speakers: int = 4

    def __post_init__(self) -> None:
        # A float or bool would pass ``< 1`` and break the label array's shape in every worker.
        value = self.max_speakers
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise AgencerdasError(f"max_speakers must be a whole number >= 1, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FrameLabels:
    """Activity (frames, max_speakers) uint8 plus what had to be left out, for the report."""

    activity: np.ndarray
    speakers: list[str]
    dropped_speakers: list[str] = field(default_factory=list)
    dropped_seconds: float = 0.0
    clipped_seconds: float = 0.0


def canonical_annotation(segments: list[Segment], uem: list[tuple[float, float]] | None) -> dict:
    """What of an annotation enters the labels key: sorted turns (ms resolution) and UEM regions.

    Rounding to milliseconds keeps ``1.5`` and ``1.500`` one key while any real edit changes it.
    """
    return {
        "turns": [[round(s.start * 1000), round(s.duration * 1000), s.speaker] for s in sorted(segments)],
        "uem": [[round(a * 1000), round(b * 1000)] for a, b in sorted(uem)] if uem else None,
    }


def frame_labels(segments: list[Segment], frames: int, frame_shift_s: float, config: LabelConfig) -> FrameLabels:
    """Speaker activity per base frame.

    Frame t is active for a speaker when one of its turns covers the frame centre
    (t + 0.5) * frame_shift_s seconds. Speakers are ordered by first appearance;
    those beyond ``config.max_speakers`` are dropped and reported (with their speech
    seconds), and speech past the end of the audio is clipped and reported.
    """
    order: list[str] = []
    for seg in sorted(segments):
        if seg.speaker not in order:
            order.append(seg.speaker)
    kept = order[: config.max_speakers]
    activity = np.zeros((frames, config.max_speakers), dtype=np.uint8)
    duration = frames * frame_shift_s
    dropped_seconds = clipped_seconds = 0.0
    for seg in segments:
        clipped_seconds += max(0.0, seg.end - max(seg.start, duration))
        if seg.speaker not in kept:
            dropped_seconds += seg.duration
            continue
        # first/last frame whose centre lies in [start, end); positions in frames are rounded to
        # 1e-6 so float noise (0.035 / 0.01 = 3.4999...) cannot move a turn edge that is on a centre
        first = max(0, int(np.ceil(round(seg.start / frame_shift_s - 0.5, 6))))
        last = min(frames, int(np.ceil(round(seg.end / frame_shift_s - 0.5, 6))))
        if last > first:
            activity[first:last, kept.index(seg.speaker)] = 1
    return FrameLabels(activity, kept, order[config.max_speakers :], dropped_seconds, clipped_seconds)
