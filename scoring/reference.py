"""Reference turns of a recording as the store keeps them with its labels entry."""

from __future__ import annotations

import numpy as np

from stores import Store, ViewRecording
from stores.segments import Segment

from .binarize import activity_to_segments


def reference_segments(store: Store, rec: ViewRecording, frames: int) -> tuple[list[Segment], list | None]:
    """Reference turns rebuilt from the stored base-rate labels (10 ms resolution) and the UEM."""
    group = store.open("labels", rec.labels)
    attrs = group.attrs.asdict()
    labels = np.asarray(group["labels"][:frames]).astype(bool)
    names = list(attrs["speakers"]) + [f"spk{i}" for i in range(len(attrs["speakers"]), labels.shape[1])]
    segments = activity_to_segments(labels, attrs["frame_shift_s"], names)
    uem = [tuple(r) for r in attrs["uem"]] if attrs.get("uem") else None
    return segments, uem
