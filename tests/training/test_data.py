"""Training windows: the epoch plan, its split across ranks, and the dataset reading them from the store."""

from __future__ import annotations

import pickle
from collections import Counter

import numpy as np
import pytest
import torch

from agencerdas.stores import downsample_features, downsample_labels
from agencerdas.training.augment import Augment
from agencerdas.training.data import WindowDataset, WindowPlan, plan_windows
from agencerdas.training.windows import Normalizer

LENGTHS = [1000, 599, 600, 1, 1234, 2500, 50, 1801]
WINDOW = 600


def _flat(batches):
    return [w for batch in batches for w in batch]


@pytest.mark.parametrize("seed", [None, 0, 1, 2, 3])
def test_plan_windows_cover_every_frame_of_every_recording(seed):
    rng = None if seed is None else np.random.default_rng(seed)
    windows = plan_windows(LENGTHS, WINDOW, rng)
    for index, n in enumerate(LENGTHS):
        starts = [s for r, s in windows if r == index]
        assert len(starts) == max(1, -(-n // WINDOW))
        assert all(0 <= s <= max(n - WINDOW, 0) for s in starts)
        covered = np.zeros(n, bool)
        for s in starts:
            covered[s : s + WINDOW] = True
        assert covered.all(), f"recording {index} ({n} frames) has uncovered frames"
        if n <= WINDOW:  # one window from the start; a short one is padded by the dataset
            assert starts == [0]


def test_plan_windows_phase_is_random_per_epoch_and_zero_without_rng():
    def tilings(n: int) -> set[tuple[int, ...]]:
        return {tuple(s for _, s in plan_windows([n], WINDOW, np.random.default_rng(seed))) for seed in range(20)}

    assert [s for _, s in plan_windows([2500], WINDOW, None)] == [0, 600, 1200, 1800, 1900]
    assert len(tilings(2500)) > 5
    # The first and last windows are clamped to the recording's ends; the inner ones shift.
    assert {t[0] for t in tilings(2500)} == {0} and {t[-1] for t in tilings(2500)} == {1900}
    # A whole number of windows has no slack to shift, and with two windows both are clamped.
    assert tilings(1200) == {(0, 600)}
    assert tilings(1000) == {(0, 400)}


def _plan(**kw) -> WindowPlan:
    args = dict(lengths=LENGTHS, window=WINDOW, batch=3, seed=7, shuffle_group=3)
    args.update(kw)
    return WindowPlan(**args)


def _epoch(plan: WindowPlan, epoch: int, start: int = 0):
    plan.set_epoch(epoch, start)
    return list(plan)


def test_window_plan_is_deterministic_per_seed_and_epoch():
    first, again = _epoch(_plan(), 0), _epoch(_plan(), 0)
    assert first == again
    assert _epoch(_plan(), 1) != first
    assert _epoch(_plan(seed=8), 0) != first
    assert len(_plan()) == len(first)
    # Each epoch is a full tiling: the same number of windows per recording, every window once.
    for epoch in range(3):
        windows = _flat(_epoch(_plan(), epoch))
        assert len(set(windows)) == len(windows)
        assert Counter(r for r, _ in windows) == Counter(r for r, _ in plan_windows(LENGTHS, WINDOW, None))
        assert all(len(b) == 3 for b in _epoch(_plan(), epoch)[:-1])


def test_window_plan_without_shuffle_is_the_fixed_tiling_in_order():
    plan = _plan(shuffle=False)
    assert _flat(_epoch(plan, 0)) == plan_windows(LENGTHS, WINDOW, None) == _flat(_epoch(plan, 5))


def test_window_plan_visits_recordings_in_groups():
    """Windows of ``shuffle_group`` recordings are shuffled together, then the next group starts."""
    for epoch in range(4):
        order = [r for r, _ in _flat(_epoch(_plan(shuffle_group=3), epoch))]
        first_seen = list(dict.fromkeys(order))
        group = {rec: i // 3 for i, rec in enumerate(first_seen)}
        groups = [group[r] for r in order]
        assert groups == sorted(groups), f"epoch {epoch}: a group's windows are not contiguous"
    # Shuffling within a group interleaves recordings.
    assert any(
        [r for r, _ in _flat(_epoch(_plan(shuffle_group=8), e))] != sorted(r for r, _ in _flat(_epoch(_plan(), e)))
        for e in range(3)
    )


@pytest.mark.parametrize("start", [0, 1, 4, 100])
def test_start_batch_skips_exactly_that_many_batches(start):
    full = _epoch(_plan(), 2)
    plan = _plan()
    assert _epoch(plan, 2, start) == full[start:]
    assert len(plan) == len(full)  # the epoch's length, whatever the position


@pytest.mark.parametrize("world, batch", [(2, 1), (2, 2), (2, 3), (2, 4), (2, 5), (3, 4), (4, 7), (8, 9)])
def test_an_epoch_is_the_same_data_whatever_the_number_of_processes(world, batch):
    single = _epoch(_plan(batch=batch), 3)
    ranks = [_epoch(_plan(batch=batch, rank=r, world=world), 3) for r in range(world)]
    # Every rank runs the same number of steps, even with fewer batches than ranks (8 ranks, 4 batches).
    assert [len(r) for r in ranks] == [-(-len(single) // world)] * world
    assert [len(_plan(batch=batch, rank=r, world=world)) for r in range(world)] == [len(ranks[0])] * world
    # Rank r takes global batches r, r + world, ...; the last round is padded by wrapping around.
    interleaved = [b for round_ in zip(*ranks) for b in round_]
    assert interleaved[: len(single)] == single
    assert interleaved[len(single) :] == [single[i % len(single)] for i in range(len(interleaved) - len(single))]
    # Resuming inside the epoch skips the same batches on every rank.
    assert [_epoch(_plan(batch=batch, rank=r, world=world), 3, 1) for r in range(world)] == [r[1:] for r in ranks]


def test_augmented_plan_sees_the_same_windows_each_with_a_seed_fixed_by_seed_and_epoch():
    plain, augmented = _epoch(_plan(), 2), _epoch(_plan(augment=True), 2)
    assert [[w[:2] for w in batch] for batch in augmented] == plain
    seeds = [w[2] for w in _flat(augmented)]
    assert len(set(seeds)) == len(seeds)
    assert _epoch(_plan(augment=True), 2) == augmented  # a resumed or other-rank plan draws the same
    assert [w[2] for w in _flat(_epoch(_plan(augment=True), 3))] != seeds
    assert _epoch(_plan(augment=True, shuffle=False), 2) == _epoch(_plan(shuffle=False), 2)  # validation: none


# ----------------------------------------------------------------------------------------------- dataset


@pytest.fixture(scope="module")
def train_set(toy):
    recordings = toy.recordings("train")
    return recordings, [r.frames for r in recordings], Normalizer.fit(toy.store, recordings)


def _dataset(toy, train_set, downsample=10, window=50, pooling="stack", speakers=4, cache_mb=64, lengths=None,
             augment=None):
    recordings, frames, normalizer = train_set
    return WindowDataset(toy.url, {}, recordings, lengths or frames, downsample, window, pooling, speakers,
                         normalizer, cache_mb, augment=augment)


def _direct(toy, rec, start, frames, normalizer, downsample, pooling):
    """The window read straight from the store, normalised and downsampled, and its labels padded to 4 speakers."""
    feats = np.asarray(toy.store.open("features", rec.features)["feats"][start : start + frames], np.float32)
    labels = np.asarray(toy.store.open("labels", rec.labels)["labels"][start : start + frames])
    labels = np.pad(labels, ((0, 0), (0, 4 - labels.shape[1])))
    return downsample_features(normalizer(feats), downsample, pooling), downsample_labels(labels, downsample)


def test_normalizer_standardises_the_training_features(toy, train_set):
    recordings, _, normalizer = train_set
    feats = np.concatenate([np.asarray(toy.store.open("features", r.features)["feats"][:], np.float64) for r in recordings])
    normed = normalizer(feats)
    np.testing.assert_allclose(normed.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(normed.std(axis=0), 1, atol=1e-3)
    assert Normalizer.from_dict(normalizer.to_dict()).mean.tolist() == normalizer.mean.tolist()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_normalizer_never_changes_its_input(dtype):
    normalizer = Normalizer(np.full(80, 1.0, np.float32), np.full(80, 2.0, np.float32))
    feats = np.full((5, 80), 3.0, dtype)
    for _ in range(2):  # e.g. the same cached entry read twice
        np.testing.assert_array_equal(normalizer(feats), np.full((5, 80), 1.0, np.float32))
    assert (feats == 3.0).all()


@pytest.mark.parametrize("pooling, downsample", [("stack", 10), ("mean", 10), ("stack", 15), ("mean", 4)])
def test_item_equals_the_entry_read_directly(toy, train_set, pooling, downsample):
    recordings, frames, normalizer = train_set
    window = 40
    dataset = _dataset(toy, train_set, downsample, window, pooling)
    for index, start in [(0, 0), (1, 333), (4, frames[4] - window * downsample)]:
        item = dataset[(index, start)]
        feats, labels = _direct(toy, recordings[index], start, window * downsample, normalizer, downsample, pooling)
        n_mels = toy.view.feature_config["n_mels"]
        assert item["feats"].shape == (window, n_mels * (downsample if pooling == "stack" else 1))
        np.testing.assert_allclose(item["feats"].numpy(), feats, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(item["labels"].numpy(), labels)
        assert item["labels"].shape == (window, 4) and item["mask"].all()
        assert item["labels"].numpy().any(), "the toy windows have speech"


def test_frames_past_the_end_or_the_cap_are_zero_and_masked(toy, train_set):
    recordings, frames, normalizer = train_set
    downsample, window = 10, 150
    # Recording 0 capped at 900 frames; recording 1 (1200 frames) is shorter than one window of 1500.
    dataset = _dataset(toy, train_set, downsample, window, lengths=[900, *frames[1:]])
    for index, start, valid in [(0, 0, 90), (0, 500, 40), (0, 900, 0), (1, 0, 120), (1, 1000, 20)]:
        item = dataset[(index, start)]
        assert item["mask"].tolist() == [True] * valid + [False] * (window - valid)
        assert not item["feats"][valid:].any() and not item["labels"][valid:].any()
        feats, labels = _direct(toy, recordings[index], start, valid * downsample, normalizer, downsample, "stack")
        np.testing.assert_allclose(item["feats"][:valid].numpy(), feats, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(item["labels"][:valid].numpy(), labels)


def test_cache_reads_each_recording_once(toy, train_set):
    _, frames, _ = train_set
    dataset = _dataset(toy, train_set)
    windows = plan_windows(frames, 500, np.random.default_rng(0))
    items = [dataset[w] for w in windows + windows]
    assert dataset.reads == len(frames)
    uncached = _dataset(toy, train_set, cache_mb=0)  # every window is its own read
    for w, item in zip(windows, items):
        got = uncached[w]
        assert all(np.array_equal(got[k].numpy(), item[k].numpy()) for k in item)
    assert uncached.reads == len(windows) and not uncached._cache


def test_cache_stays_within_its_budget_and_stays_correct(toy, train_set):
    _, frames, _ = train_set
    dataset = _dataset(toy, train_set)
    entry = frames[0] * (toy.view.feature_config["n_mels"] * 2 + 4)  # float16 features + uint8 labels
    dataset.cache_bytes = int(1.5 * entry)  # room for one entry, not two
    reference = _dataset(toy, train_set)
    sequence = [(0, 0), (0, 500), (1, 0), (0, 100), (0, 700), (2, 0), (2, 300)]
    for w in sequence:
        item = dataset[w]
        assert all(np.array_equal(item[k].numpy(), reference[w][k].numpy()) for k in item)
        assert dataset._cached_bytes <= dataset.cache_bytes
        assert dataset._cached_bytes == sum(f.nbytes + y.nbytes for f, y in dataset._cache.values())
    assert dataset.reads == 4  # 0, 1, 0 again (evicted by 1), 2
    assert list(dataset._cache) == [2]


def test_a_worker_copy_starts_with_an_empty_cache(toy, train_set):
    dataset = _dataset(toy, train_set)
    item = dataset[(3, 200)]
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy.reads == 0 and not copy._cache and copy._store is None
    again = copy[(3, 200)]
    assert all(np.array_equal(again[k].numpy(), item[k].numpy()) for k in item)


def test_augmentation_perturbs_seeded_windows_only_and_never_their_labels(toy, train_set):
    dataset = _dataset(toy, train_set, augment=Augment(warp=0.1, gain_db=6, tilt_db=6, freq_masks=2, mask_bins=8))
    plain = _dataset(toy, train_set)
    for window in [(0, 0), (2, 100), (1, 1200 - 500)]:
        reference = plain[window]
        for key, value in dataset[window].items():  # no seed (validation, inference): as stored
            assert torch.equal(value, reference[key])
        first, again, other = dataset[(*window, 11)], dataset[(*window, 11)], dataset[(*window, 12)]
        assert torch.equal(first["feats"], again["feats"]) and not torch.equal(first["feats"], other["feats"])
        assert not torch.allclose(first["feats"], reference["feats"])
        for key in ("labels", "mask", "weight"):
            assert torch.equal(first[key], reference[key])
