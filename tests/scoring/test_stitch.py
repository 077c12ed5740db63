"""Whole-recording inference: stitching, bounded reads, binarisation, segments, tuning."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from agencerdas.pipeline.rttm import Segment, format_rttm, parse_rttm
from agencerdas.stores.errors import AgencerdasError
from agencerdas.scoring.binarize import activity_to_segments, binarize
from agencerdas.scoring.settings import PipelineSettings
from agencerdas.scoring.stitch import iter_stitched, stitched_posteriors


def _truth(n_frames: int, n_speakers: int, seed: int) -> np.ndarray:
    """(n_frames, S) float activity: random turns of 20-80 frames, some overlapped."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n_frames, n_speakers), dtype=np.float32)
    t = 0
    while t < n_frames:
        length = int(rng.integers(20, 80))
        speaker = int(rng.integers(n_speakers))
        truth[t : t + length, speaker] = 1.0
        if rng.random() < 0.3:  # overlapped speech by another speaker
            truth[t : t + length // 2, (speaker + 1) % n_speakers] = 1.0
        t += length
    return truth


def _index_reader(feature_dim: int = 2):
    """A ``read`` whose first feature is the frame index, and the list of its requests."""
    requests: list[tuple[int, int]] = []

    def read(start: int, frames: int) -> np.ndarray:
        requests.append((start, frames))
        x = np.zeros((frames, feature_dim), dtype=np.float32)
        x[:, 0] = np.arange(start, start + frames)
        return x

    return read, requests


def test_stitching_recovers_per_chunk_permutations():
    truth = _truth(2000, 3, seed=0)
    rng = np.random.default_rng(1)
    permutations = list(itertools.permutations(range(3)))
    used = []

    def predict(x: np.ndarray) -> np.ndarray:
        start = int(x[0, 0])
        order = list(permutations[rng.integers(len(permutations))])
        used.append(order)
        # Soft, slightly noisy probabilities, speakers in a fresh order per chunk.
        chunk = 0.1 + 0.8 * truth[start : start + len(x)] + rng.uniform(-0.05, 0.05, (len(x), 3))
        return chunk[:, order]

    read, requests = _index_reader()
    posteriors = stitched_posteriors(predict, read, 2000, window=500, step=250)

    assert posteriors.shape == (2000, 3) and posteriors.dtype == np.float32
    assert len({tuple(p) for p in used}) > 1  # the test really permutes
    assert [start for start, _ in requests] == [0, 250, 500, 750, 1000, 1250, 1500]
    # Equal to the truth up to one global speaker permutation.
    best = min(permutations, key=lambda p: np.abs(posteriors[:, list(p)] - (0.1 + 0.8 * truth)).max())
    assert np.abs(posteriors[:, list(best)] - (0.1 + 0.8 * truth)).max() < 0.06
    assert np.array_equal(posteriors[:, list(best)] > 0.5, truth > 0.5)


def test_last_chunk_ends_at_the_recording_end_and_overlaps_average():
    read, requests = _index_reader()
    n_frames = 1100

    def predict(x: np.ndarray) -> np.ndarray:
        # Constant per chunk (no speaker activity pattern): identity order is kept.
        return np.full((len(x), 2), float(x[0, 0] > 0), dtype=np.float32)

    posteriors = stitched_posteriors(predict, read, n_frames, window=400, step=300)
    assert requests == [(0, 400), (300, 400), (600, 400), (700, 400)]
    assert posteriors[:300].max() == 0.0
    assert np.allclose(posteriors[300:400], 0.5)  # chunk 0 and chunk 1 averaged
    assert np.allclose(posteriors[400:], 1.0)


def test_recording_shorter_than_a_window_is_one_chunk():
    read, requests = _index_reader()
    posteriors = stitched_posteriors(lambda x: np.full((len(x), 4), 0.25), read, 37, window=500, step=250)
    assert requests == [(0, 37)]
    assert posteriors.shape == (37, 4)


def test_long_recording_reads_window_sized_chunks_only():
    n_frames, window, step = 200_000, 500, 250
    truth = _truth(n_frames, 2, seed=3)
    read, requests = _index_reader(feature_dim=8)

    def predict(x: np.ndarray) -> np.ndarray:
        start = int(x[0, 0])
        chunk = truth[start : start + len(x)]
        # Swap speakers on every other chunk.
        return chunk[:, ::-1] if (start // step) % 2 else chunk

    blocks = []
    posteriors = np.empty((n_frames, 2), dtype=np.float32)
    for start, block in iter_stitched(predict, read, n_frames, window, step):
        assert len(block) <= window  # the generator never holds more than one window
        blocks.append((start, len(block)))
        posteriors[start : start + len(block)] = block

    assert {frames for _, frames in requests} == {window}
    assert requests[-1] == (n_frames - window, window)
    assert all(0 <= start <= n_frames - window for start, _ in requests)
    assert blocks[0][0] == 0 and sum(length for _, length in blocks) == n_frames
    assert all(a + n == b for (a, n), (b, _) in zip(blocks, blocks[1:]))
    assert min(np.abs(posteriors - truth).max(), np.abs(posteriors[:, ::-1] - truth).max()) < 1e-6


def test_bad_arguments_are_rejected():
    read, _ = _index_reader()
    with pytest.raises(ValueError, match="step"):
        stitched_posteriors(lambda x: np.zeros((len(x), 2)), read, 1000, window=100, step=200)
    with pytest.raises(ValueError, match="predict returned shape"):
        stitched_posteriors(lambda x: np.zeros((len(x) - 1, 2)), read, 1000, window=100, step=50)
    with pytest.raises(AgencerdasError, match="median_frames"):
        PipelineSettings(median_frames=4)
    with pytest.raises(AgencerdasError, match="overlap"):
        PipelineSettings(overlap=1.0)
    assert PipelineSettings(window=500, overlap=0.5).step == 250
    assert PipelineSettings(window=500, overlap=0.9).step == 50


def test_binarize_thresholds_then_median_filters_per_speaker():
    posteriors = np.zeros((30, 2), dtype=np.float32)
    posteriors[5:20, 0] = 0.9
    posteriors[12, 0] = 0.2  # one-frame gap: filled
    posteriors[25, 1] = 0.9  # one-frame blip: removed
    activity = binarize(posteriors, threshold=0.5, median_frames=3)
    assert activity.dtype == bool and activity.shape == (30, 2)
    assert activity[:, 0].nonzero()[0].tolist() == list(range(5, 20))
    assert not activity[:, 1].any()
    assert binarize(posteriors, 0.5, 1)[25, 1]  # width 1 leaves it unchanged
    assert not binarize(np.full((4, 1), 0.5), 0.5, 1).any()  # strictly above the threshold


def test_undecided_speech_goes_to_the_most_probable_speaker():
    posteriors = np.array([
        [0.40, 0.35, 0.0],  # someone speaks (1 - 0.6 * 0.65 = 0.61) but no one passes 0.5: speaker 0
        [0.10, 0.45, 0.3],  # 1 - 0.9 * 0.55 * 0.7 = 0.65: speaker 1
        [0.20, 0.20, 0.0],  # 0.36: silence stays silence
        [0.90, 0.45, 0.0],  # decided: speaker 0 alone, the 0.45 is not added
    ])
    filled = binarize(posteriors, 0.5, 1)
    assert filled.tolist() == [[True, False, False], [False, True, False], [False, False, False], [True, False, False]]
    assert binarize(posteriors, 0.5, 1, fill_speech=False).tolist() == [[False] * 3] * 3 + [[True, False, False]]
    assert binarize(np.zeros((0, 3)), 0.5, 1).shape == (0, 3)


def test_segments_survive_the_rttm_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    posteriors = np.clip(_truth(3000, 3, seed=5) + rng.normal(0, 0.2, (3000, 3)), 0, 1)
    activity = binarize(posteriors, threshold=0.5, median_frames=11)
    segments = activity_to_segments(activity, frame_shift_s=0.1, speaker_names=["a", "b c", "d"])
    assert {s.speaker for s in segments} == {"a", "b c", "d"}

    path = tmp_path / "hyp.rttm"
    path.write_text(format_rttm("rec", segments), encoding="utf-8")
    parsed = parse_rttm(path)["rec"]

    def rounded(segs: list[Segment]) -> list[tuple[float, float, str]]:
        return sorted((round(s.start, 3), round(s.duration, 3), s.speaker.replace(" ", "_")) for s in segs)

    assert rounded(parsed) == rounded(segments)


def test_activity_to_segments_frames_to_seconds():
    activity = np.zeros((10, 3), dtype=bool)
    activity[0:3, 0] = True
    activity[7:10, 0] = True
    activity[4:5, 2] = True
    segments = activity_to_segments(activity, frame_shift_s=0.5)
    assert [(s.start, s.duration, s.speaker) for s in segments] == [
        (0.0, 1.5, "spk0"),
        (2.0, 0.5, "spk2"),
        (3.5, 1.5, "spk0"),
    ]
    assert len(activity_to_segments(activity, 0.5, min_duration_s=1.0)) == 2
    with pytest.raises(ValueError, match="speaker names"):
        activity_to_segments(activity, 0.5, speaker_names=["a"])


@pytest.mark.parametrize("batch", [2, 3, 50])
def test_batches_of_chunks_stitch_exactly_like_single_chunks(batch):
    truth = _truth(700, 3, seed=11)
    rng = np.random.default_rng(4)
    perms = {}

    def single(x):  # each chunk's speakers in a fixed random order, keyed by the chunk's content
        key = x.tobytes()
        perms.setdefault(key, rng.permutation(3))
        return x[:, perms[key]]

    def stacked(x):
        return np.stack([single(chunk) for chunk in x])

    read = lambda start, n: truth[start : start + n]  # noqa: E731
    expected = stitched_posteriors(single, read, 700, 100, 50)
    np.testing.assert_array_equal(stitched_posteriors(stacked, read, 700, 100, 50, batch=batch), expected)
