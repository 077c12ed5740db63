"""Speakers in a window: the stored labels keep every speaker, a window keeps at most MAX_SPEAKERS of
them (the most active, in column order, the frames of the others out of the loss) on both data paths,
and every batch names the identity of each label column."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agencerdas.stores import ArraySpec, Store, ViewRecording, content_key, downsample_labels
from agencerdas.training.data import SIMULATED, WindowDataset, WindowPlan
from agencerdas.training.identities import number_speakers
from agencerdas.training.inputs import load_data, segment_bank, speaker_stats
from agencerdas.training.resident import ResidentWindows
from agencerdas.training.windows import Normalizer, WindowFormat

FRAMES, MELS, DOWNSAMPLE, WINDOW = 1800, 8, 10, 60  # WINDOW model frames = 600 base frames
#: Active base frames of each of six speakers in window [600, 1200): 0, 4, 2, 3 are the most active.
BUSY = [300, 50, 200, 100, 250, 20]


def _six() -> np.ndarray:
    """(FRAMES, 6): in [0, 600) only columns 0, 4 and 5 speak; in [600, 1200) all six, BUSY frames each,
    from the window's start; in [1200, 1800) five, the fourth place a tie of columns 1, 3 and 5."""
    y = np.zeros((FRAMES, 6), np.uint8)
    y[0:200, 0] = y[150:400, 4] = y[420:500, 5] = 1
    for column, n in enumerate(BUSY):
        y[600 + 100 * (column % 3) : 600 + 100 * (column % 3) + n, column] = 1
    for column, n in zip([0, 1, 2, 3, 5], [100, 80, 300, 80, 80]):
        y[1200 + 5 * column : 1200 + 5 * column + n, column] = 1
    return y


@pytest.fixture(scope="module")
def crowd(tmp_path_factory):
    """A store of three recordings: six speakers, three speakers (two of the six's names), and a
    pseudo-labelled one (four cluster columns); the view's recordings and their labels."""
    store = Store(tmp_path_factory.mktemp("speakers") / "store")
    rng = np.random.default_rng(0)
    three = np.zeros((FRAMES, 3), np.uint8)
    three[100:700, 0] = three[500:900, 1] = three[1000:1500, 2] = 1
    pseudo = np.zeros((FRAMES, 4), np.uint8)
    pseudo[:900, 0] = pseudo[900:, 1] = 1
    recordings = []
    for index, (labels, names, is_pseudo) in enumerate([(_six(), ["ann", "bo", "cy", "di", "ed", "flo"], False),
                                                        (three, ["zed", "ann", "ed"], False),
                                                        (pseudo, ["pseudo0", "pseudo1"], True)]):
        fkey, lkey = content_key("f", index), content_key("l", index)
        with store.write("features", fkey, {}) as writer:
            writer.create("feats", ArraySpec(MELS, "float16", 500, None))
            writer.append("feats", rng.standard_normal((FRAMES, MELS)).astype(np.float16))
        with store.write("labels", lkey, {"speakers": names}) as writer:
            writer.create("labels", ArraySpec(labels.shape[1], "uint8", 500, None))
            writer.append("labels", labels)
        recordings.append(ViewRecording(fkey, lkey, FRAMES, FRAMES / 100, names, is_pseudo, n_speakers=len(names)))
    return store, recordings, [_six(), three, pseudo]


def _paths(crowd, speaker_ids="recording"):
    store, recordings, _ = crowd
    table, _ = number_speakers(recordings, speaker_ids)
    normalizer = Normalizer.identity(MELS)
    stream = WindowDataset(store.url, {}, recordings, [FRAMES] * 3, DOWNSAMPLE, WINDOW, "stack", 4, normalizer, 64,
                           identities=table)
    fmt = WindowFormat(normalizer, DOWNSAMPLE, "stack", 4)
    resident = ResidentWindows(store, recordings, [FRAMES] * 3, [None] * 3, fmt, WINDOW * DOWNSAMPLE, 1.0,
                               torch.device("cpu"), progress=False, identities=table)
    return stream, resident, table


def test_a_crowded_window_keeps_the_most_active_speakers_in_column_order_and_masks_the_others(crowd):
    _, _, (six, three, _) = crowd
    stream, resident, table = _paths(crowd)
    model = downsample_labels(six[600:1200], DOWNSAMPLE)
    on_device = lambda window: {k: v[0] for k, v in resident.batch([window]).items() if k != "padded"}  # noqa: E731
    for get in (stream.__getitem__, on_device):
        item = get((0, 600))
        np.testing.assert_array_equal(item["labels"].numpy(), model[:, [0, 2, 3, 4]])
        np.testing.assert_array_equal(item["mask"].numpy(), ~(model[:, 1] | model[:, 5]).astype(bool))
        assert not item["mask"].all() and item["valid"].all()
        assert item["speakers"].tolist() == table[0][[0, 2, 3, 4]].tolist()
        # three speakers: 0, 4, 5 and the silent column 1 (the lowest of the silent ones)
        quiet = get((0, 0))
        quiet_model = downsample_labels(six[:600], DOWNSAMPLE)
        np.testing.assert_array_equal(quiet["labels"].numpy(), quiet_model[:, [0, 1, 4, 5]])
        assert quiet["mask"].all() and quiet["speakers"].tolist() == [table[0][0], -1, table[0][4], table[0][5]]
        # a tie for the fourth place (columns 1, 3 and 5, 80 frames each) goes to the lower column
        tie = get((0, 1200))
        assert tie["speakers"].tolist() == table[0][[0, 1, 2, 3]].tolist()
        left_out = downsample_labels(six[1200:], DOWNSAMPLE)[:, 5].astype(bool)
        np.testing.assert_array_equal(tie["mask"].numpy(), ~left_out)
    # at most four speakers stored: the columns as stored, then a silent one (as before the rule)
    few = stream[(1, 600)]
    np.testing.assert_array_equal(few["labels"].numpy()[:, :3], downsample_labels(three[600:1200], DOWNSAMPLE))
    assert not few["labels"][:, 3].any() and few["mask"].all()
    assert few["speakers"].tolist() == [table[1][0], table[1][1], table[1][2], -1]


def test_both_paths_give_the_same_batches_with_more_speakers_than_outputs(crowd):
    stream, resident, _ = _paths(crowd)
    assert resident.columns == 6
    plan = WindowPlan([FRAMES] * 3, WINDOW * DOWNSAMPLE, 4, seed=5, shuffle_group=2)
    masked = 0
    for epoch in range(3):
        plan.set_epoch(epoch)
        for windows in [*plan, [(0, 600), (0, 0), (0, 1200), (1, 600)]]:
            items = [stream[w] for w in windows]
            got = resident.batch(windows)
            for key in ("feats", "labels", "mask", "valid", "weight", "speakers"):
                expected = torch.stack([item[key] for item in items])
                assert got[key].dtype == expected.dtype and torch.equal(got[key], expected), (key, windows)
            masked += int((~got["mask"]).sum())
    assert masked > 0 and got["speakers"].dtype == torch.int64 and got["speakers"].shape == (4, 4)


def test_identities_per_recording_or_per_name_and_none_for_pseudo_labels(crowd):
    _, recordings, _ = crowd
    by_recording, count = number_speakers(recordings, "recording")
    assert [t.tolist() for t in by_recording] == [[0, 1, 2, 3, 4, 5], [6, 7, 8], [-1, -1]] and count == 9
    by_name, count = number_speakers(recordings, "global")
    assert [t.tolist() for t in by_name] == [[0, 1, 2, 3, 4, 5], [6, 0, 4], [-1, -1]] and count == 7
    stream, resident, _ = _paths(crowd, "global")
    # the same speaker in two windows of a recording, and "ann" and "ed" in two recordings: one number each
    ann_first, ann_again, ann_other = stream[(0, 0)], stream[(0, 600)], stream[(1, 0)]
    assert ann_first["speakers"][0] == ann_again["speakers"][0] == ann_other["speakers"][1] == 0
    assert stream[(1, 1000)]["speakers"].tolist() == [-1, -1, 4, -1]
    assert (stream[(2, 0)]["speakers"] == -1).all() and (resident.batch([(2, 600)])["speakers"] == -1).all()


def test_simulated_windows_carry_their_sources_identities(toy):
    cfg = toy.config("SIM_PROB=0.5", "SIM_MIN_SEGMENT_S=0.3", "MAX_SPEAKERS=2", "SPEAKER_IDS=global")
    data = load_data(cfg, toy.url, "default", {})
    bank = segment_bank(cfg, data)
    labels = [np.asarray(toy.store.open("labels", r.labels)["labels"][:]) for r in data.train]
    assert max(y.shape[1] for y in labels) > 2  # the bank takes recordings with more speakers than outputs
    for seed in range(50):
        recipe = bank.recipe(seed, 600)
        assert len(recipe.identities) <= 2 and recipe.identities.dtype == np.int64
        for runs, identity in zip(recipe.slots, recipe.identities):
            for _, rec, src, _ in runs:  # the slot's voice is that identity's, wherever it was taken
                assert data.speaker_table[rec][int(np.flatnonzero(labels[rec][src])[0])] == identity
    normalizer = Normalizer.fit(data.store, data.train)
    stream = WindowDataset(toy.url, {}, data.train, data.lengths, cfg.downsample, 40, cfg.pooling, 2, normalizer, 64,
                           bank=bank, identities=data.speaker_table)
    resident = ResidentWindows(data.store, data.train, data.lengths, [None] * len(data.train),
                               WindowFormat(normalizer, cfg.downsample, cfg.pooling, 2), 40 * cfg.downsample, 1.0,
                               torch.device("cpu"), progress=False, bank=bank, identities=data.speaker_table)
    windows = [(SIMULATED, seed) for seed in range(6)] + [(0, 0), (1, 0)]
    got = resident.batch(windows)
    for row, window in enumerate(windows):
        item = stream[window]
        assert torch.equal(got["speakers"][row], item["speakers"]) and torch.equal(got["labels"][row], item["labels"])
        if window[0] == SIMULATED:
            heard = item["labels"].any(dim=0).numpy()
            expected = np.where(heard, bank.recipe(window[1], 40 * cfg.downsample).speakers(2), -1)
            assert item["speakers"].tolist() == expected.tolist()
    assert data.identities == len({n for r in data.train for n in r.speakers})
    assert "speakers per annotated train recording" in speaker_stats(cfg, data)[0]


def test_corpus_stats_count_what_the_window_rule_leaves_out(toy):
    four, two = (load_data(toy.config(f"MAX_SPEAKERS={s}"), toy.url, "default", {}) for s in (4, 2))
    line, left_out = speaker_stats(toy.config("MAX_SPEAKERS=4"), four)
    assert " 0 of " in line.split("; ")[2] and left_out == 0
    line, left_out = speaker_stats(toy.config("MAX_SPEAKERS=2"), two)
    assert "speakers per annotated train recording 2: " in line and "3: " in line
    crowded = int(line.split("; ")[2].split(" of ")[0])
    assert crowded > 0 and "most active" in line


def test_load_data_says_which_rule_made_the_split(toy):
    """The line corpus-stats.txt starts with: the rule, and recordings and voices per part."""
    data = load_data(toy.config(), toy.url, "default", {})
    assert data.split.startswith("by recordings: ")
    assert "train 5 recordings, 3 voices; validation 1 recordings, 2 voices" in data.split
