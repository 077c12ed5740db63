"""The reference a recording is scored against, as the store keeps it with its labels entry."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agencerdas.stores import Store, ViewRecording
from agencerdas.stores.segments import Segment

from .binarize import activity_to_segments

#: Where a reference came from, as reports name it.
FROM_TURNS = "annotation turns"
FROM_FRAMES = "stored frame labels (10 ms, at most max_speakers speakers; the entry predates stored turns)"


@dataclass
class Reference:
    """Reference ``segments`` (seconds), the scored regions ``uem`` (seconds) and what they came from."""

    segments: list[Segment]
    uem: list[tuple[float, float]]
    source: str


def load_reference(store: Store, rec: ViewRecording, frames: int) -> Reference:
    """The reference of ``rec`` over its first ``frames`` base frames (a cap may shorten the recording).

    Labels entries keep the annotation's own turns (every speaker, unquantised), the same
    reference ``evaluate --audio-dir`` reads from RTTM; entries written before that are
    rebuilt from the frame labels and say so in ``source``. The UEM (or the whole recording)
    is cut to the frames in use, so a capped recording is scored only where it was heard.
    """
    group = store.open("labels", rec.labels)
    attrs = group.attrs.asdict()
    shift = attrs["frame_shift_s"]
    end_s = frames * shift
    regions = [(float(a), min(float(b), end_s)) for a, b in attrs.get("uem") or [(0.0, end_s)] if a < end_s]
    if attrs.get("turns") is not None:
        segments = [Segment(float(start), float(duration), str(speaker)) for start, duration, speaker in attrs["turns"]]
        return Reference(sorted(segments), regions, FROM_TURNS)
    labels = np.asarray(group["labels"][:frames]).astype(bool)
    names = list(attrs["speakers"]) + [f"spk{i}" for i in range(len(attrs["speakers"]), labels.shape[1])]
    return Reference(activity_to_segments(labels, shift, names), regions, FROM_FRAMES)
