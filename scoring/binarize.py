"""From posteriors to speaker turns: thresholding, speech filling, median filtering, segments.

Times: frame ``t`` covers ``[t * frame_shift_s, (t + 1) * frame_shift_s)`` seconds.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.ndimage import median_filter

from agencerdas.stores.segments import Segment

from .powerset import powerset_decisions


def binarize(posteriors: np.ndarray, threshold: float, median_frames: int, fill_speech: bool = True,
             max_overlap: int | None = None) -> np.ndarray:
    """Speaker activity from posteriors: threshold, fill undecided speech, then median filter along time;
    for a powerset model (``max_overlap`` K), the most probable set of at most K speakers per frame
    instead of the threshold and the filling (:func:`scoring.powerset.powerset_decisions`), then the filter.

    An EEND model that hears a voice unlike its training voices often spreads the
    probability over several speaker outputs, none above the threshold, and the speech
    is missed. With ``fill_speech``, a frame where the probability that *anyone* speaks,
    1 - prod_s(1 - p_s), exceeds the threshold but no speaker does goes to the most
    probable speaker. (On the demo's unseen test voices this cut missed speech from 15%
    to 10% and DER by 2 points.)

    Args:
        posteriors: (n_frames, S) probabilities.
        threshold: a frame is active when its posterior is strictly above it.
        median_frames: odd filter width in frames; each speaker is filtered
            independently (1 leaves the thresholded activity unchanged).
        fill_speech: assign undecided speech frames as above.
        max_overlap: None for a multilabel model; K for a powerset model (threshold and fill_speech unused).

    Returns:
        (n_frames, S) bool activity.
    """
    if median_frames < 1 or median_frames % 2 == 0:
        raise ValueError(f"median_frames={median_frames} must be an odd number >= 1")
    posteriors = np.asarray(posteriors, dtype=np.float64)
    if max_overlap is not None:
        active = powerset_decisions(posteriors, max_overlap)
    else:
        active = posteriors > threshold
    if fill_speech and max_overlap is None and posteriors.size:
        undecided = ~active.any(axis=1) & (1.0 - np.prod(1.0 - posteriors, axis=1) > threshold)
        active[undecided, posteriors[undecided].argmax(axis=1)] = True
    # size (median_frames, 1): filter along time only, never across speakers.
    return median_filter(active.astype(np.uint8), size=(median_frames, 1), mode="nearest").astype(bool)


def activity_to_segments(
    activity: np.ndarray,
    frame_shift_s: float,
    speaker_names: Sequence[str] | None = None,
    min_duration_s: float = 0.0,
    max_end_s: float | None = None,
) -> list[Segment]:
    """Runs of active frames as speaker turns in seconds.

    Args:
        activity: (n_frames, S) bool.
        frame_shift_s: seconds per frame.
        speaker_names: S names; default ``spk0``, ``spk1``, ...
        min_duration_s: turns shorter than this are dropped.
        max_end_s: turns are clipped to end by this time (the recording's duration: the
            last model frame may reach past the end of the audio).

    Returns:
        Segments sorted by start; a speaker never active contributes none.
    """
    activity = np.asarray(activity, dtype=bool)
    n_speakers = activity.shape[1]
    names = list(speaker_names) if speaker_names is not None else [f"spk{i}" for i in range(n_speakers)]
    if len(names) != n_speakers:
        raise ValueError(f"{len(names)} speaker names given for {n_speakers} speakers")
    segments = []
    for index, name in enumerate(names):
        # Rising edges are run starts and falling edges run ends (exclusive), in frames.
        edges = np.diff(np.concatenate(([0], activity[:, index].astype(np.int8), [0])))
        for begin, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
            stop = end * frame_shift_s if max_end_s is None else min(end * frame_shift_s, max_end_s)
            duration = stop - begin * frame_shift_s
            if duration > 0 and duration >= min_duration_s:
                segments.append(Segment(float(begin * frame_shift_s), float(duration), name))
    return sorted(segments)
