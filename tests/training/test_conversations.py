"""Simulated conversations: labels are the layout, voices never meet themselves, every data path and
worker count sees the same windows, a resumed run the same run, and a corpus without material says so."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from agencerdas.stores.errors import AgencerdasError
from agencerdas.training.data import SIMULATED, WindowDataset, WindowPlan
from agencerdas.training.inputs import load_data, segment_bank
from agencerdas.training.resident import ResidentWindows
from agencerdas.training.augment import stretch_rows
from agencerdas.training.conversations import FLOOR, SegmentBank, render
from agencerdas.training.windows import Normalizer, WindowFormat

FRAMES = 600  # base frames per window: 6 s


def _bank(toy, *overrides):
    cfg = toy.config("SIM_PROB=0.5", "SIM_MIN_SEGMENT_S=0.3", *overrides)
    data = load_data(cfg, toy.url, "default", {})
    return cfg, data, segment_bank(cfg, data)


def _rows(toy, data):
    feats = [np.asarray(toy.store.open("features", r.features)["feats"][:n], np.float32)
             for r, n in zip(data.train, data.lengths)]
    labels = [np.asarray(toy.store.open("labels", r.labels)["labels"][:n]) for r, n in zip(data.train, data.lengths)]
    return feats, labels


@pytest.mark.parametrize("warp", [0.0, 0.2])
def test_labels_are_the_layout_and_the_mix_adds_powers(toy, warp):
    _, data, bank = _bank(toy, f"SIM_WARP={warp}")
    feats, labels = _rows(toy, data)
    for seed in range(20):
        recipe = bank.recipe(seed, FRAMES)
        truth = recipe.labels(4)
        for s, runs in enumerate(recipe.slots):
            expected = np.zeros(FRAMES, dtype=np.uint8)
            for dst, rec, src, n in runs:
                expected[dst : dst + n] = 1
                # material: a region where exactly this one stored speaker talks
                assert (labels[rec][src : src + n].sum(axis=1) == 1).all()
            np.testing.assert_array_equal(truth[:, s], expected)
        mixed = render(recipe, lambda rec, start, n: feats[rec][start : start + n])
        assert mixed.shape == (FRAMES, feats[0].shape[1]) and np.isfinite(mixed).all()
        background = np.full_like(mixed, -np.inf)
        for dst, rec, src, n in recipe.background:
            background[dst : dst + n] = feats[rec][src : src + n]
        speech = truth.sum(axis=1)
        # one speaker: exactly log(e^background + e^(speech + gain))
        dst, rec, src, n = recipe.slots[0][0]
        alone = np.flatnonzero(speech[dst : dst + n] == 1)
        if len(alone):
            voice = feats[rec][src + alone] + recipe.gains[0]
            if recipe.alphas[0] != 1.0:  # the speaker's own voice warp
                voice = stretch_rows(torch.from_numpy(voice), torch.full((len(alone),), float(recipe.alphas[0]))).numpy()
            np.testing.assert_allclose(mixed[dst + alone], np.logaddexp(background[dst + alone], voice), rtol=1e-5, atol=1e-5)
        silent = speech == 0
        expected_bg = np.where(np.isneginf(background[silent]), FLOOR, background[silent])
        np.testing.assert_allclose(mixed[silent], expected_bg, rtol=1e-6, atol=1e-5)  # exp, then log: float32 rounding


def test_a_speaker_warp_changes_the_voices_and_never_the_layout(toy):
    _, _, plain = _bank(toy)
    _, _, warped = _bank(toy, "SIM_WARP=0.15")
    alphas = []
    for seed in range(30):
        a, b = plain.recipe(seed, FRAMES), warped.recipe(seed, FRAMES)
        assert (a.slots, a.background) == (b.slots, b.background)
        np.testing.assert_array_equal(a.gains, b.gains)
        assert (a.alphas == 1.0).all()
        alphas += b.alphas.tolist()
    assert 0.85 <= min(alphas) and max(alphas) <= 1.15 and len(set(alphas)) == len(alphas)


@pytest.mark.parametrize("ids", ["recording", "global"])
def test_a_source_is_never_mixed_with_itself(toy, ids):
    _, data, bank = _bank(toy, f"SPEAKER_IDS={ids}")
    _, labels = _rows(toy, data)
    names = [toy.store.attrs("labels", r.labels)["speakers"] for r in data.train]
    distinct_names = {n for recording in names for n in recording}
    if ids == "global":
        assert len(bank.identities) == len(distinct_names)  # the toy's speakers recur across recordings
    else:
        assert len(bank.identities) > len(distinct_names)
    for seed in range(200):
        recipe = bank.recipe(seed, FRAMES)
        people = []
        for runs in recipe.slots:
            sources = set()
            for _, rec, src, n in runs:
                column = int(np.flatnonzero(labels[rec][src])[0])
                sources.add(names[rec][column] if ids == "global" else (rec, column))
            if not runs:  # the window filled up before this speaker's first turn
                continue
            assert len(sources) == 1  # one slot, one identity
            people.append(sources.pop())
            assert len(people) == len(set(people)), (seed, people)
        # a voice never overlaps itself within its slot
        for runs in recipe.slots:
            spans = sorted((dst, dst + n) for dst, _, _, n in runs)
            assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:]))


@pytest.mark.parametrize("warp", [0.0, 0.2])
def test_both_paths_and_any_worker_count_see_the_same_simulated_windows(toy, warp):
    cfg, data, bank = _bank(toy, "AUG_WARP=0.1", "AUG_GAIN_DB=3", "AUG_FREQ_MASKS=1", "AUG_MASK_BINS=4",
                            f"SIM_WARP={warp}")
    normalizer = Normalizer.fit(data.store, data.train)
    augment = cfg.augment
    stream = WindowDataset(toy.url, {}, data.train, data.lengths, cfg.downsample, 40, cfg.pooling, 4, normalizer, 64,
                           augment=augment, bank=bank, identities=data.speaker_table)
    resident = ResidentWindows(data.store, data.train, data.lengths, [None] * len(data.train),
                               WindowFormat(normalizer, cfg.downsample, cfg.pooling, 4, augment), 40 * cfg.downsample,
                               1.0, torch.device("cpu"), progress=False, bank=bank, identities=data.speaker_table)
    plan = WindowPlan(data.lengths, 40 * cfg.downsample, 4, seed=1, shuffle_group=2, augment=True, simulate=0.5)
    plan.set_epoch(2)
    windows = list(plan)
    assert any(w[0] == SIMULATED for b in windows for w in b) and any(w[0] != SIMULATED for b in windows for w in b)
    expected = []
    for batch in windows:
        items = [stream[w] for w in batch]
        expected.append({k: torch.stack([i[k] for i in items]) for k in ("feats", "labels", "mask", "weight",
                                                                          "speakers")})
        got = resident.batch(batch)
        torch.testing.assert_close(got["feats"], expected[-1]["feats"], rtol=1e-4, atol=1e-4)
        for key in ("labels", "mask", "weight", "speakers"):
            assert torch.equal(got[key], expected[-1][key]), key
    for workers in (0, 2):
        loader = DataLoader(stream, batch_sampler=plan, num_workers=workers)
        for got, want in zip(loader, expected, strict=True):
            assert all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("path", ["true", "false"])
def test_resume_is_exact_with_simulation_on(toy, tmp_path, path):
    from tests.training.test_train import _resume_matches

    stopped, _ = _resume_matches(toy, tmp_path, ["EPOCHS=2", "SIM_PROB=0.5", "SIM_MIN_SEGMENT_S=0.3",
                                                 f"DATA_ON_DEVICE={path}"], ["MAX_STEPS=4"])
    assert stopped["config"]["sim_prob"] == 0.5
    assert "\nsimulated conversations (50% of training windows)" in (tmp_path / "a" / "corpus-stats.txt").read_text()


def test_a_corpus_without_material_gives_a_clear_message():
    one_each = [np.ones((500, 4), np.uint8) * np.eye(4, dtype=np.uint8)[i % 2] for i in range(3)]
    with pytest.raises(AgencerdasError, match="one speaker per recording"):
        SegmentBank(one_each, [np.arange(4) + 4 * i for i in range(3)], [None] * 3, min_frames=50, max_speakers=4)
    always_overlapped = [np.ones((500, 4), np.uint8) for _ in range(3)]
    with pytest.raises(AgencerdasError, match="single-speaker regions.*SIM_PROB=0"):
        SegmentBank(always_overlapped, [np.arange(4)] * 3, [None] * 3, min_frames=50, max_speakers=4)
