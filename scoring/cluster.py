"""Global speakers from local ones: which chunk slots speak, which slots are one speaker, and
each speaker's activity over the whole recording (the clustering step of EEND-VC and pyannote).

A recording is cut into C chunks of L model frames, chunk ``c`` covering frames
``[starts[c], starts[c] + L)``. A model gives each chunk S local speaker slots, numbered
arbitrarily per chunk, with activity posteriors (C, L, S) and one embedding per slot (C, S, E).
:func:`active_slots` picks the slots that speak, :func:`cluster_slots` groups them into global
speakers (agglomerative, cosine distance, average linkage, and never two slots of one chunk in
one speaker), :func:`assign_slots` gives the slots left out (too briefly active to cluster on) to
the nearest of those speakers, and :func:`overlap_add` rebuilds each speaker's (n_frames,) posteriors.

Times: frame ``t`` covers ``[t * frame_shift_s, (t + 1) * frame_shift_s)`` seconds.
"""

from __future__ import annotations

import math
import numbers
import warnings
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from scipy.optimize import linear_sum_assignment

from agencerdas.stores.errors import AgencerdasError


def active_slots(activity: np.ndarray, threshold: float = 0.5, min_frames: int = 1) -> np.ndarray:
    """(C, S) bool: slot ``s`` of chunk ``c`` speaks when ``activity[c, :, s]`` is strictly above
    ``threshold`` on at least ``min_frames`` frames of its chunk.

    With the default ``min_frames=1`` a slot left out has no frame above the threshold, so
    clustering only the active slots drops no speech the threshold would decide. A larger value
    (about a second's worth of frames) keeps slots whose embeddings rest on a few frames, and
    are therefore unreliable, out of the clustering, at the price of their speech.

    Args:
        activity: (C, L, S) posteriors in [0, 1].
        threshold: the binarisation threshold of the posteriors.
        min_frames: frames above the threshold a slot needs, >= 1.
    """
    activity = np.asarray(activity)
    if activity.ndim != 3:
        raise ValueError(f"activity has shape {activity.shape}, expected (chunks, frames, slots)")
    if min_frames < 1:
        raise AgencerdasError(f"min_frames={min_frames} must be at least 1 frame")
    return np.count_nonzero(activity > threshold, axis=1) >= min_frames


def speaker_bounds(num_speakers: int | None, min_speakers: int | None,
                   max_speakers: int | None) -> tuple[int, float]:
    """The allowed cluster count as ``(fewest, most)``; checks the user's numbers."""
    for name, value in (("num_speakers", num_speakers), ("min_speakers", min_speakers),
                        ("max_speakers", max_speakers)):
        if value is not None and (not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1):
            raise AgencerdasError(f"{name}={value!r} must be a whole number of speakers, at least 1 (or leave it unset)")
    fewest = 1 if min_speakers is None else min_speakers
    most = math.inf if max_speakers is None else max_speakers
    if fewest > most:
        raise AgencerdasError(f"min_speakers={min_speakers} is above max_speakers={max_speakers}: swap them")
    if num_speakers is None:
        return fewest, most
    if not fewest <= num_speakers <= most:
        raise AgencerdasError(f"num_speakers={num_speakers} is outside min_speakers={min_speakers} and "
                              f"max_speakers={max_speakers}: give num_speakers alone or a range that holds it")
    return num_speakers, num_speakers


class SpeakerCountWarning(UserWarning):
    """:func:`cluster_slots` could not give the number of speakers asked for; the message says the number
    found and why. Callers that report per recording collect it with :func:`speaker_count_notes`."""


def _unmet(found: int, asked: tuple[int | None, int | None, int | None], slots: int, together: int) -> str:
    """Why ``found`` clusters of ``slots`` active slots (at most ``together`` in one chunk) miss the number
    ``asked`` (num_speakers, min_speakers, max_speakers)."""
    num, least, most = asked
    wanted = (f"exactly {num}" if num is not None else
              " and ".join(f"{word} {value}" for word, value in (("at least", least), ("at most", most)) if value))
    if found < (num or least or 0):
        why = (f"only {slots} chunk slot(s) speak in the whole recording and clustering never splits a slot"
               if slots else "no chunk slot speaks in the whole recording")
    elif found == together:
        why = (f"{together} slots speak together in one chunk, and two slots of one chunk are never one speaker "
               "(the model hears them as different people)")
    else:
        why = ("every pair of the speakers found speaks together in some chunk, and two slots of one chunk are "
               "never one speaker")
    return f"asked for {wanted} speaker(s), found {found}: {why}"


@contextmanager
def speaker_count_notes() -> Iterator[list[str]]:
    """Collect the messages of :class:`SpeakerCountWarning` raised inside the block into the list it yields
    (in order, none shown); other warnings pass on as they would have."""
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield notes
    for warning in caught:
        if issubclass(warning.category, SpeakerCountWarning):
            notes.append(str(warning.message))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    """(N, E) float64 rows of ``embeddings`` (N, E) scaled to unit norm."""
    x = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if not np.all(np.isfinite(x)) or np.any(norms == 0):
        raise ValueError("active slot embeddings must be finite and non-zero")
    return x / norms


def _agglomerate(distance: np.ndarray, threshold: float, fewest: int, most: float) -> np.ndarray:
    """(N,) cluster index per item (the index of a surviving item, not yet renumbered).

    ``distance`` (N, N) float64 holds the items' cosine distances with +inf where two items must
    never share a cluster (and on the diagonal); it is overwritten. The closest allowed pair is
    merged while more than ``fewest`` clusters remain and either it is within ``threshold`` or
    more than ``most`` clusters remain; merging stops early when no allowed pair is left.
    """
    n = len(distance)
    sizes = np.ones(n, dtype=np.float64)
    cluster_of = np.arange(n)
    # Each row's minimum and where it is: a merge changes only two columns, so most rows keep
    # theirs and the closest pair is an argmin over N numbers instead of N * N.
    nearest = distance.argmin(axis=1)
    nearest_distance = distance[np.arange(n), nearest]
    clusters = n
    while clusters > fewest:
        i = int(nearest_distance.argmin())
        j = int(nearest[i])
        closest = nearest_distance[i]
        if closest == math.inf or (closest > threshold and clusters <= most):
            break
        # Lance-Williams for average linkage. A cannot-link is +inf and any mean with +inf is
        # +inf, so the merged cluster cannot join anything either member could not: the
        # constraint is the OR of the members' and holds however large the clusters grow. The
        # new row is +inf at i and j too (distance[i, i] and distance[j, j] are +inf).
        merged = (sizes[i] * distance[i] + sizes[j] * distance[j]) / (sizes[i] + sizes[j])
        distance[i] = merged
        distance[:, i] = merged
        distance[j] = math.inf
        distance[:, j] = math.inf
        sizes[i] += sizes[j]
        cluster_of[cluster_of == j] = i
        clusters -= 1
        # Rows whose minimum was at i or j (now moved or gone) are searched again; every other
        # row only compares its minimum with its new distance to i.
        stale = (nearest == i) | (nearest == j)
        stale[[i, j]] = True  # j's own row is all +inf now: it must never be picked again
        closer = ~stale & (merged < nearest_distance)
        nearest[closer] = i
        nearest_distance[closer] = merged[closer]
        rows = np.flatnonzero(stale)
        nearest[rows] = distance[rows].argmin(axis=1)
        nearest_distance[rows] = distance[rows, nearest[rows]]
    return cluster_of


def cluster_slots(
    embeddings: np.ndarray,
    active: np.ndarray,
    threshold: float,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
) -> np.ndarray:
    """Global speaker of every active slot: agglomerative clustering with average linkage on
    cosine distance, where two slots of one chunk never end in one cluster.

    Clusters merge, closest allowed pair first, until the closest allowed average distance
    exceeds ``threshold``. ``num_speakers`` instead merges until exactly that many clusters
    remain, whatever the distances; ``min_speakers`` stops merging before the count drops below
    it and ``max_speakers`` keeps merging above the threshold until the count is down to it.

    A count the constraint makes unreachable gives the closest possible: fewer than the
    requested number of active slots leaves one cluster per slot, and when every remaining pair
    of clusters shares a chunk merging stops above the requested count: at least the largest
    number of active slots in one chunk, and more when earlier merges, which are never undone,
    paired slots so that every remaining pair collides somewhere. No error: a
    :class:`SpeakerCountWarning` says the number found and why (:func:`speaker_count_notes`).

    Args:
        embeddings: (C, S, E) one embedding per chunk slot; only active slots are read. Unit
            norm is expected; any finite non-zero vector is scaled to it.
        active: (C, S) bool, e.g. from :func:`active_slots`.
        threshold: cosine distance in [0, 2] above which clusters are not merged.
        num_speakers: exact number of speakers, if known.
        min_speakers, max_speakers: bounds on the number of speakers, if known.

    Returns:
        (C, S) int64 labels: -1 for an inactive slot, otherwise 0..K-1 numbered in order of
        first appearance (chunk by chunk, slot by slot). Time O(N^2) per merge at worst and
        memory O(N^2) float64 for N active slots (2,000 slots: 32 MB).
    """
    embeddings = np.asarray(embeddings)
    active = np.asarray(active, dtype=bool)
    if embeddings.ndim != 3 or active.shape != embeddings.shape[:2]:
        raise ValueError(f"embeddings {embeddings.shape} and active {active.shape} do not match "
                         "(chunks, slots, dim) and (chunks, slots)")
    if math.isnan(threshold):
        raise AgencerdasError("clustering threshold is NaN: give a cosine distance in [0, 2]")
    fewest, most = speaker_bounds(num_speakers, min_speakers, max_speakers)
    labels = np.full(active.shape, -1, dtype=np.int64)
    chunk_of, slot_of = np.nonzero(active)  # row-major: the order of first appearance
    if len(chunk_of) == 0:
        if num_speakers is not None or min_speakers is not None:
            warnings.warn(_unmet(0, (num_speakers, min_speakers, max_speakers), 0, 0), SpeakerCountWarning,
                          stacklevel=2)
        return labels
    x = _unit_rows(embeddings[chunk_of, slot_of])
    distance = np.clip(1.0 - x @ x.T, 0.0, 2.0)  # rounding can leave 1 - x.x slightly outside
    distance[chunk_of[:, None] == chunk_of[None, :]] = math.inf  # cannot-link, diagonal included
    cluster_of = _agglomerate(distance, threshold, fewest, most)
    # np.unique sorts by cluster index; rank the clusters by their first item instead.
    _, first, inverse = np.unique(cluster_of, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    labels[chunk_of, slot_of] = rank[inverse.reshape(-1)]
    if not fewest <= len(first) <= most:
        warnings.warn(_unmet(len(first), (num_speakers, min_speakers, max_speakers), len(chunk_of),
                             int(active.sum(axis=1).max())), SpeakerCountWarning, stacklevel=2)
    return labels


def assign_slots(embeddings: np.ndarray, labels: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``labels`` with each unlabelled candidate slot given to the nearest speaker's centroid.

    A centroid is the normalised mean of a speaker's labelled slots. Within a chunk the candidates
    take speakers none of the chunk's labelled slots holds, by an optimal one-to-one assignment on
    cosine distance (scipy's Hungarian), so a speaker still has at most one slot per chunk; a
    candidate left without a free speaker stays -1 (pyannote assigns its chunks' speakers the same way).

    Args:
        embeddings: (C, S, E) slot embeddings; only candidates' are read.
        labels: (C, S) int64 from :func:`cluster_slots` (-1: unlabelled).
        candidates: (C, S) bool, slots worth assigning (e.g. :func:`active_slots` with ``min_frames=1``).

    Returns:
        (C, S) int64: ``labels`` with candidates assigned; speakers keep their numbers.
    """
    labels = np.array(labels, dtype=np.int64)
    speakers = int(labels.max(initial=-1)) + 1
    todo = np.asarray(candidates, dtype=bool) & (labels < 0)
    if not speakers or not todo.any():
        return labels
    sums = np.zeros((speakers, embeddings.shape[2]))
    np.add.at(sums, labels[labels >= 0], _unit_rows(embeddings[labels >= 0]))
    centroids = sums / np.linalg.norm(sums, axis=1, keepdims=True).clip(1e-12)
    for chunk in np.flatnonzero(todo.any(axis=1)):
        slots = np.flatnonzero(todo[chunk])
        free = np.setdiff1d(np.arange(speakers), labels[chunk][labels[chunk] >= 0])
        if not len(free):
            continue
        cost = 1.0 - _unit_rows(embeddings[chunk, slots]) @ centroids[free].T  # (slots, free speakers)
        rows, cols = linear_sum_assignment(cost)
        labels[chunk, slots[rows]] = free[cols]
    return labels


def overlap_add(activity: np.ndarray, labels: np.ndarray, starts: np.ndarray, n_frames: int) -> np.ndarray:
    """Each global speaker's posteriors over the recording, from its slots' posteriors.

    Slot ``s`` of chunk ``c`` with ``labels[c, s] == k`` adds ``activity[c, :, s]`` to frames
    ``[starts[c], starts[c] + L)`` of speaker k; every frame is then divided by the number of
    chunks covering it, so a speaker a covering chunk did not hear is averaged down there as
    sliding-window stitching does (:mod:`.stitch`).

    Args:
        activity: (C, L, S) posteriors in [0, 1].
        labels: (C, S) int, -1 or 0..K-1, each speaker at most once per chunk (as from
            :func:`cluster_slots`).
        starts: (C,) chunk start frames; together the chunks cover ``[0, n_frames)``, as
            :mod:`.stitch` places them (the last chunk ends at ``n_frames``; a recording
            shorter than a window is one chunk of ``n_frames`` frames).
        n_frames: recording length in model frames.

    Returns:
        (n_frames, K) float32 posteriors; (n_frames, 0) when no slot is labelled.
    """
    activity = np.asarray(activity)
    labels = np.asarray(labels, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    if activity.ndim != 3 or labels.shape != (len(activity), activity.shape[2]) or starts.shape != (len(activity),):
        raise ValueError(f"activity {activity.shape}, labels {labels.shape} and starts {starts.shape} do not "
                         "match (chunks, frames, slots), (chunks, slots) and (chunks,)")
    length = activity.shape[1]
    if len(starts) and (starts.min() < 0 or starts.max() + length > n_frames):
        raise ValueError(f"chunks of {length} frames at starts {starts.min()}..{starts.max()} leave [0, {n_frames})")
    ordered = np.sort(labels, axis=1)
    if labels.min(initial=-1) < -1 or np.any((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)):
        raise ValueError("labels must be -1 or a speaker index, each speaker at most once per chunk")
    speakers = int(labels.max(initial=-1)) + 1
    sums = np.zeros((n_frames, speakers), dtype=np.float64)
    counts = np.zeros(n_frames, dtype=np.int64)
    for chunk, start in enumerate(starts):
        counts[start : start + length] += 1
        slots = np.flatnonzero(labels[chunk] >= 0)
        sums[start : start + length, labels[chunk, slots]] += activity[chunk][:, slots]
    if np.any(counts == 0):
        raise ValueError(f"frame {np.flatnonzero(counts == 0)[0]} of [0, {n_frames}) is in no chunk")
    return (sums / counts[:, None]).astype(np.float32)
