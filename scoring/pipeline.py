"""The torch-free half of the diarization pipeline: from what the segmentation model says of a recording
to speaker turns, by one function (:func:`turns`) that tuning, validation during training, ``evaluate``,
``diarize``, the ``Diarizer`` and pseudo labels all call, so a DER measured anywhere is the DER of what
runs everywhere.

A recording reaches it as :class:`Chunks` (each chunk's slots with their embeddings: clustered across the
recording, any number of speakers) or as stitched posteriors (n_frames, S). Steps, by
:class:`~scoring.settings.PipelineSettings`: speaking slots -> clustering (threshold or eigengap count,
never two slots of one chunk together) -> the briefly active slots assigned to the speakers found ->
overlap-add -> decisions (threshold / powerset, median) -> an optional speech gate (a VAD) -> turns.

Times: frame ``t`` covers ``[t * frame_shift_s, (t + 1) * frame_shift_s)`` seconds.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from agencerdas.stores.segments import Segment

from .binarize import activity_to_segments
from .cluster import SpeakerCountWarning, active_slots, assign_slots, cluster_slots, overlap_add, speaker_bounds
from .count import eigengap_count
from .settings import PipelineSettings

#: A chunk's slot takes part in clustering when it is active this long (an embedding pooled over a few
#: frames is mostly noise); shorter slots are then assigned to the clusters found.
CLUSTER_MIN_ACTIVE_S = 1.0
#: Most slots clustered (average linkage holds their pairwise distances: 2,000 slots, 32 MB of float64); a
#: longer recording clusters an evenly spaced subset and assigns the rest to the speakers found, so its
#: memory does not grow with the square of its length.
MAX_CLUSTERED_SLOTS = 2000


@dataclass
class Chunks:
    """What the model says of each chunk of a recording, before clustering.

    Attributes:
        starts: (C,) first model frame of each chunk.
        activity: (C, L, S) float32 slot posteriors.
        embeddings: (C, S, E) float32 slot embeddings (unit vectors; only speaking slots' are read).
        frames: the recording's length in model frames (the chunks cover [0, frames)).
    """

    starts: np.ndarray
    activity: np.ndarray
    embeddings: np.ndarray
    frames: int


@dataclass
class Decisions:
    """A recording's speakers as the pipeline decides them.

    Attributes:
        activity: (n_frames, K) bool decisions.
        posteriors: (n_frames, K) float32 each speaker's posteriors (stitched, or overlap-added chunks).
    """

    activity: np.ndarray
    posteriors: np.ndarray


def cluster_speakers(chunks: Chunks, settings: PipelineSettings, frame_shift_s: float) -> np.ndarray:
    """Posteriors (n_frames, K) float32 of the K speakers found by clustering ``chunks``' slots. A requested
    number of speakers that the chunks cannot give is a :class:`~scoring.cluster.SpeakerCountWarning`.

    Slots speaking at least :data:`CLUSTER_MIN_ACTIVE_S` are clustered (at most :data:`MAX_CLUSTERED_SLOTS`,
    evenly spaced over the recording); every other speaking slot is then
    given to a speaker its chunk lacks (pyannote's assignment); a slot that never speaks, or has no embedding
    (all zeros), takes part in neither, so it cannot take the speaker a briefly active slot of its chunk needed.
    """
    # A slot without an embedding (an encoder heard too little of it) can be neither clustered nor assigned.
    embedded = np.linalg.norm(chunks.embeddings, axis=2) > 0  # (C, S)
    active = active_slots(chunks.activity, settings.slot_threshold, 1) & embedded
    confident = active_slots(chunks.activity, settings.slot_threshold,
                             max(1, round(CLUSTER_MIN_ACTIVE_S / frame_shift_s))) & embedded
    # A short clip may have no slot active that long: its speech is still clustered, on what there is.
    chosen = confident if confident.any() else active
    if chosen.sum() > MAX_CLUSTERED_SLOTS:  # an evenly spaced subset is clustered, the others assigned below
        chunk_of, slot_of = np.nonzero(chosen)
        keep = np.linspace(0, len(chunk_of) - 1, MAX_CLUSTERED_SLOTS).round().astype(int)
        chosen = np.zeros_like(chosen)
        chosen[chunk_of[keep], slot_of[keep]] = True
    if settings.count == "eigengap" and settings.num_speakers is None and chosen.any():
        fewest, most = speaker_bounds(None, settings.min_speakers, settings.max_speakers)
        chunk_of, slot_of = np.nonzero(chosen)
        number = eigengap_count(chunks.embeddings[chunk_of, slot_of], chunk_of, fewest, most)
        with warnings.catch_warnings():  # the estimate is no request: missing it is nothing to report
            warnings.simplefilter("ignore", SpeakerCountWarning)
            labels = cluster_slots(chunks.embeddings, chosen, settings.cluster_threshold, number)
    else:
        labels = cluster_slots(chunks.embeddings, chosen, settings.cluster_threshold, settings.num_speakers,
                               settings.min_speakers, settings.max_speakers)
    labels = assign_slots(chunks.embeddings, labels, active)
    post = overlap_add(chunks.activity, labels, chunks.starts, chunks.frames)
    # Nobody speaks: one silent speaker keeps the shape every consumer of posteriors expects.
    return post if post.shape[1] else np.zeros((chunks.frames, 1), dtype=np.float32)


def decide(outputs: Chunks | np.ndarray, settings: PipelineSettings, frame_shift_s: float,
           speech: np.ndarray | None = None) -> Decisions:
    """Speaker decisions of a recording from :class:`Chunks` (clustered) or stitched posteriors (n_frames, S).

    ``speech``: (n_frames,) bool where a VAD hears speech, or None; a frame is decided speech only where it
    agrees (frames past its end are not speech).
    """
    if isinstance(outputs, Chunks):
        posteriors = cluster_speakers(outputs, settings, frame_shift_s)
    else:
        posteriors = np.asarray(outputs, dtype=np.float32)
    activity = settings.binarize(posteriors)
    if speech is not None:
        gate = np.zeros(len(activity), dtype=bool)
        gate[: min(len(gate), len(speech))] = speech[: len(gate)]
        activity &= gate[:, None]
    return Decisions(activity, posteriors)


def turns(outputs: Chunks | np.ndarray, settings: PipelineSettings, frame_shift_s: float, duration_s: float,
          speech: np.ndarray | None = None) -> tuple[list[Segment], Decisions]:
    """Speaker turns in seconds (clipped to the recording's ``duration_s``) and the decisions they come from;
    see :func:`decide`."""
    decided = decide(outputs, settings, frame_shift_s, speech)
    return activity_to_segments(decided.activity, frame_shift_s, max_end_s=duration_s), decided
