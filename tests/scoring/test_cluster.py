"""Global clustering of chunk speaker slots: active slots, constrained average linkage, overlap-add."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage

from agencerdas.scoring.cluster import (SpeakerCountWarning, active_slots, assign_slots, cluster_slots, overlap_add,
                                        speaker_count_notes)
from agencerdas.scoring.stitch import chunk_starts
from agencerdas.stores.errors import AgencerdasError


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _speakers_in_chunks(n_speakers: int = 6, n_chunks: int = 40, slots: int = 4, dim: int = 32,
                        noise: float = 0.05, seed: int = 0,
                        present: list[list[int]] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Well-separated synthetic speakers: each chunk holds 2-4 of them (or ``present[c]``, and then
    ``n_chunks`` is ``len(present)``) in random slots.

    Returns embeddings (C, S, E) unit norm, active (C, S) bool and the true speaker per slot
    (C, S) int, -1 where inactive.
    """
    rng = np.random.default_rng(seed)
    if present is None:
        present = [list(rng.choice(n_speakers, size=rng.integers(2, slots + 1), replace=False))
                   for _ in range(n_chunks)]
    n_chunks = len(present)
    centres = _unit(rng.normal(size=(n_speakers, dim)))
    embeddings = _unit(rng.normal(size=(n_chunks, slots, dim)))  # inactive slots: junk
    truth = np.full((n_chunks, slots), -1)
    for c, speakers in enumerate(present):
        where = rng.choice(slots, size=len(speakers), replace=False)
        truth[c, where] = speakers
        embeddings[c, where] = _unit(centres[speakers] + noise * rng.normal(size=(len(speakers), dim)))
    return embeddings, truth >= 0, truth


def _by_first_appearance(truth: np.ndarray) -> np.ndarray:
    """``truth`` (C, S) renumbered 0, 1, ... in order of first appearance, -1 kept."""
    order: dict[int, int] = {}
    return np.array([[-1 if t < 0 else order.setdefault(t, len(order)) for t in row] for row in truth])


def _starts(n_frames: int, window: int, step: int) -> np.ndarray:
    """(C,) chunk starts as sliding-window inference makes them."""
    return np.asarray(list(chunk_starts(n_frames, window, step)))


def _no_chunk_repeats_a_speaker(labels: np.ndarray) -> bool:
    return all(len(set(row[row >= 0])) == np.count_nonzero(row >= 0) for row in labels)


def _count(labels: np.ndarray) -> int:
    return int(labels.max()) + 1


def test_active_slots_need_min_frames_strictly_above_threshold():
    activity = np.zeros((2, 10, 3))
    activity[0, :3, 0] = 0.9  # 3 frames above
    activity[0, :, 1] = 0.5  # at the threshold: never above it
    activity[1, 4:6, 2] = 0.6  # 2 frames above
    assert active_slots(activity).tolist() == [[True, False, False], [False, False, True]]
    assert active_slots(activity, min_frames=3).tolist() == [[True, False, False], [False, False, False]]
    assert active_slots(activity, threshold=0.4).tolist() == [[True, True, False], [False, False, True]]
    with pytest.raises(AgencerdasError, match="min_frames"):
        active_slots(activity, min_frames=0)


def test_identical_slots_of_one_chunk_stay_apart():
    embeddings = np.zeros((3, 2, 4))
    embeddings[:, :, 0] = 1.0  # every slot the same vector: distance 0 everywhere
    active = np.ones((3, 2), dtype=bool)
    labels = cluster_slots(embeddings, active, threshold=2.0)
    assert _no_chunk_repeats_a_speaker(labels) and _count(labels) == 2
    for kwargs, asked in (({"num_speakers": 1}, "exactly 1"), ({"max_speakers": 1}, "at most 1")):
        with pytest.warns(SpeakerCountWarning, match=f"asked for {asked} speaker.s., found 2: 2 slots speak together"):
            labels = cluster_slots(embeddings, active, threshold=2.0, **kwargs)
        assert _no_chunk_repeats_a_speaker(labels)
        assert _count(labels) == 2


def test_cannot_link_holds_when_large_clusters_would_average_it_away():
    # Chunk 0 holds two identical slots, and 200 one-slot chunks of the same voice follow: once
    # both are in big clusters their mean distance is tiny, and only the constraint keeps them apart.
    rng = np.random.default_rng(3)
    voice = _unit(rng.normal(size=16))
    embeddings = np.empty((201, 2, 16))
    embeddings[:] = _unit(voice + 0.01 * rng.normal(size=(201, 2, 16)))
    embeddings[0] = voice
    active = np.zeros((201, 2), dtype=bool)
    active[0] = True
    active[1:, 0] = True
    with pytest.warns(SpeakerCountWarning, match="found 2"):
        labels = cluster_slots(embeddings, active, threshold=2.0, num_speakers=1)
    assert labels[0, 0] != labels[0, 1]
    assert _count(labels) == 2


def test_constraint_holds_on_random_slots_merged_as_far_as_possible():
    rng = np.random.default_rng(4)
    embeddings = _unit(rng.normal(size=(100, 4, 8)))
    active = rng.random((100, 4)) < 0.7
    with pytest.warns(SpeakerCountWarning, match="every pair of the speakers found speaks together"):
        labels = cluster_slots(embeddings, active, threshold=2.0, num_speakers=1)
    assert _no_chunk_repeats_a_speaker(labels)
    assert _count(labels) >= active.sum(axis=1).max()
    assert np.array_equal(labels >= 0, active)


def test_without_constraints_it_is_average_linkage():
    rng = np.random.default_rng(5)
    embeddings = _unit(rng.normal(size=(60, 1, 5)))
    labels = cluster_slots(embeddings, np.ones((60, 1), dtype=bool), threshold=0.7)[:, 0]
    expected = fcluster(linkage(embeddings[:, 0], method="average", metric="cosine"), 0.7, criterion="distance")
    assert 1 < _count(labels) < 60
    assert np.array_equal(labels, _by_first_appearance(expected[None, :])[0])


def test_well_separated_speakers_are_recovered_exactly():
    embeddings, active, truth = _speakers_in_chunks()
    labels = cluster_slots(embeddings, active, threshold=0.5)
    assert np.array_equal(labels, _by_first_appearance(truth))


def test_inactive_slots_get_minus_one_whatever_their_embedding():
    embeddings, active, truth = _speakers_in_chunks(seed=1)
    embeddings[~active] = np.nan  # never read
    labels = cluster_slots(embeddings, active, threshold=0.5)
    assert np.array_equal(labels < 0, ~active)
    assert np.array_equal(labels, _by_first_appearance(truth))


def test_no_active_slot_gives_all_minus_one():
    with pytest.warns(SpeakerCountWarning, match="found 0"):
        labels = cluster_slots(np.ones((3, 2, 4)), np.zeros((3, 2), dtype=bool), threshold=0.5, num_speakers=2)
    assert labels.dtype == np.int64 and labels.tolist() == [[-1, -1]] * 3


def test_speakers_are_numbered_by_first_appearance():
    a, b, c = np.eye(3)
    embeddings = np.array([[a, c], [b, a], [c, b]], dtype=np.float64)
    active = np.array([[False, True], [True, True], [True, True]])
    labels = cluster_slots(embeddings, active, threshold=0.5)
    # c appears first (chunk 0, slot 1), then b (chunk 1, slot 0), then a.
    assert labels.tolist() == [[-1, 0], [1, 2], [0, 1]]


@pytest.mark.parametrize("threshold", [0.0, 0.5, 2.0])
def test_num_speakers_overrides_the_threshold(threshold):
    embeddings, active, truth = _speakers_in_chunks(seed=2)
    labels = cluster_slots(embeddings, active, threshold=threshold, num_speakers=6)
    assert np.array_equal(labels, _by_first_appearance(truth))


def test_num_speakers_fewer_or_more_than_the_threshold_gives():
    # Speakers meet only within the pairs (0, 1), (2, 3), (4, 5), so down to 2 clusters are allowed.
    embeddings, active, _ = _speakers_in_chunks(present=[[0, 1], [2, 3], [4, 5]] * 5, slots=2, seed=2)
    assert _count(cluster_slots(embeddings, active, threshold=0.5)) == 6
    for wanted in (2, 4, 9):
        labels = cluster_slots(embeddings, active, threshold=0.5, num_speakers=wanted)
        assert _count(labels) == wanted and _no_chunk_repeats_a_speaker(labels)


def test_min_and_max_speakers_bound_the_count():
    embeddings, active, truth = _speakers_in_chunks(seed=2)
    expected = _by_first_appearance(truth)
    # A threshold that merges too far stops at min_speakers; one that merges too little goes on to max_speakers.
    assert np.array_equal(cluster_slots(embeddings, active, threshold=1.5, min_speakers=6), expected)
    assert np.array_equal(cluster_slots(embeddings, active, threshold=0.0, max_speakers=6), expected)
    # Inside the bounds the threshold decides.
    assert np.array_equal(cluster_slots(embeddings, active, threshold=0.5, min_speakers=2, max_speakers=8), expected)


def test_unreachable_counts_give_the_closest_possible():
    embeddings, active, _ = _speakers_in_chunks(n_chunks=1, seed=6)
    n_active = int(active.sum())
    with pytest.warns(SpeakerCountWarning, match=f"found {n_active}: {n_active} slots speak together in one chunk"):
        assert _count(cluster_slots(embeddings, active, threshold=0.5, num_speakers=1)) == n_active
    embeddings = _unit(np.random.default_rng(7).normal(size=(3, 1, 4)))
    with pytest.warns(SpeakerCountWarning, match="at least 5 speaker.s., found 3: only 3 chunk slot"):
        assert _count(cluster_slots(embeddings, np.ones((3, 1), dtype=bool), threshold=0.0, min_speakers=5)) == 3
    with pytest.warns(SpeakerCountWarning, match="exactly 2 speaker.s., found 0: no chunk slot speaks"):
        cluster_slots(embeddings, np.zeros((3, 1), dtype=bool), threshold=0.5, num_speakers=2)


def test_a_count_that_is_met_says_nothing_and_notes_collect_only_the_count_warnings():
    embeddings, active, _ = _speakers_in_chunks(n_chunks=3)
    with speaker_count_notes() as notes:
        cluster_slots(embeddings, active, threshold=0.5, num_speakers=int(active.sum(axis=1).max()))
    assert notes == []
    embeddings = _unit(np.random.default_rng(7).normal(size=(3, 1, 4)))
    with pytest.warns(UserWarning, match="another warning"):
        with speaker_count_notes() as notes:
            cluster_slots(embeddings, np.ones((3, 1), dtype=bool), threshold=0.0, num_speakers=5)
            warnings.warn("another warning", UserWarning)
    assert len(notes) == 1 and notes[0].startswith("asked for exactly 5 speaker(s), found 3")


@pytest.mark.parametrize("kwargs", [
    {"num_speakers": 0},
    {"min_speakers": 0},
    {"min_speakers": 4, "max_speakers": 2},
    {"num_speakers": 5, "max_speakers": 3},
    {"num_speakers": 2.5},
    {"num_speakers": "3"},
    {"max_speakers": True},
])
def test_impossible_speaker_counts_are_user_errors(kwargs):
    embeddings, active, _ = _speakers_in_chunks(n_chunks=3)
    with pytest.raises(AgencerdasError):
        cluster_slots(embeddings, active, threshold=0.5, **kwargs)


def test_overlap_add_rebuilds_known_activity():
    rng = np.random.default_rng(8)
    n_frames, window, step, n_speakers, slots = 230, 50, 20, 3, 4
    truth = (rng.random((n_frames, n_speakers)) < 0.4).astype(np.float32)
    starts = _starts(n_frames, window, step)
    activity = np.zeros((len(starts), window, slots), dtype=np.float32)
    labels = np.full((len(starts), slots), -1)
    for c, start in enumerate(starts):
        # Each chunk holds every speaker in a slot of its own choosing, plus one silent slot.
        order = rng.permutation(slots)[:n_speakers]
        activity[c][:, order] = truth[start : start + window]
        labels[c, order] = np.arange(n_speakers)
    rebuilt = overlap_add(activity, labels, starts, n_frames)
    assert rebuilt.dtype == np.float32
    np.testing.assert_allclose(rebuilt, truth, atol=1e-6)


def test_overlap_add_averages_down_where_a_covering_chunk_lacks_the_speaker():
    activity = np.ones((2, 4, 2), dtype=np.float32)
    labels = np.array([[0, 1], [0, -1]])  # speaker 1 only in chunk 0
    rebuilt = overlap_add(activity, labels, np.array([0, 2]), 6)
    assert rebuilt[:, 0].tolist() == [1.0] * 6
    assert rebuilt[:, 1].tolist() == [1.0, 1.0, 0.5, 0.5, 0.0, 0.0]


def test_overlap_add_short_recording_and_no_speakers():
    activity = np.full((1, 7, 2), 0.25, dtype=np.float32)
    starts = _starts(7, 50, 25)  # shorter than a window: one chunk of 7 frames
    assert overlap_add(activity, np.array([[-1, 0]]), starts, 7).tolist() == [[0.25]] * 7
    assert overlap_add(activity, np.full((1, 2), -1), starts, 7).shape == (7, 0)


def test_overlap_add_rejects_chunks_that_leave_the_recording_or_repeat_a_speaker():
    activity = np.ones((2, 4, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="leave"):
        overlap_add(activity, np.zeros((2, 2)) - 1, np.array([0, 3]), 6)
    with pytest.raises(ValueError, match="in no chunk"):
        overlap_add(activity, np.zeros((2, 2)) - 1, np.array([0, 1]), 6)
    with pytest.raises(ValueError, match="once per chunk"):
        overlap_add(activity, np.array([[0, 0], [0, 1]]), np.array([0, 2]), 6)


def test_clustered_slots_rebuild_each_speakers_activity():
    # End to end: slots found active, clustered by embedding, overlap-added back to the truth.
    rng = np.random.default_rng(9)
    n_frames, window, step, n_speakers, slots, dim = 300, 60, 30, 4, 3, 16
    truth = np.zeros((n_frames, n_speakers), dtype=np.float32)
    for k in range(n_speakers):  # speaker k talks in frames [75k, 75k + 90)
        truth[75 * k : 75 * k + 90, k] = 0.9
    centres = _unit(rng.normal(size=(n_speakers, dim)))
    starts = _starts(n_frames, window, step)
    activity = np.zeros((len(starts), window, slots), dtype=np.float32)
    embeddings = _unit(rng.normal(size=(len(starts), slots, dim)))
    for c, start in enumerate(starts):
        heard = [k for k in range(n_speakers) if truth[start : start + window, k].any()]
        for slot, k in zip(rng.permutation(slots), heard):
            activity[c, :, slot] = truth[start : start + window, k]
            embeddings[c, slot] = _unit(centres[k] + 0.05 * rng.normal(size=dim))
    labels = cluster_slots(embeddings, active_slots(activity), threshold=0.5)
    # Each chunk brings at most one new speaker, in order of onset, so cluster k is speaker k.
    np.testing.assert_allclose(overlap_add(activity, labels, starts, n_frames), truth, atol=1e-6)


def test_briefly_active_slots_join_the_nearest_speaker_never_one_their_chunk_holds():
    directions = np.eye(3)  # three speakers
    embeddings = np.stack([directions[[0, 1, 2]], directions[[1, 0, 2]], directions[[2, 1, 0]]]).astype(float)
    embeddings[0, 2] = embeddings[0, 0] * 0.9 + directions[2] * 0.1  # nearest speaker 0, which its chunk holds
    labels = np.array([[0, 1, -1], [1, -1, -1], [-1, -1, -1]])
    candidates = np.array([[True, True, True], [True, True, False], [True, False, True]])
    assigned = assign_slots(embeddings, labels, candidates)
    assert assigned[0].tolist() == [0, 1, -1]  # nearest speaker 0 is its chunk's already; no speaker is free
    assert assigned[1].tolist() == [1, 0, -1]  # its nearest, and free in its chunk
    assert assigned[2].tolist() == [1, -1, 0]  # one to one: slot 2 takes its nearest, slot 0 the one left
    assert _no_chunk_repeats_a_speaker(assigned)
