"""Powerset training (LOSS=powerset): the classes, the loss, decisions without a threshold, and a
powerset model through training, resume, validation, evaluation and diarization; old PIT checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from agencerdas.inference.diarize import diarize
from agencerdas.inference.evaluate import EvalRequest, evaluate
from agencerdas.inference.model import load_model
from agencerdas.scoring.powerset import powerset_decisions, powerset_sets
from agencerdas.training.checkpoint import load_checkpoint
from agencerdas.training.config import resolve
from agencerdas.training.model import build_model
from agencerdas.training.posteriors import predictor
from agencerdas.training.powerset import powerset_ce, speaker_set_classes

FIXTURES = Path(__file__).parent / "fixtures"


def test_the_classes_of_four_speakers_and_two_at_once():
    sets = powerset_sets(4, 2)
    assert sets.shape == (11, 4) and not sets[0].any()  # the empty set first
    assert sorted(map(tuple, sets.tolist())) == sorted({tuple(row) for row in sets.tolist()})  # each set once
    assert sets.sum(axis=1).tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]
    assert [int(np.flatnonzero(row)[0]) for row in sets[1:5]] == [0, 1, 2, 3]


def test_frames_with_more_speakers_than_a_class_holds_are_left_out_and_counted():
    mapping = torch.from_numpy(powerset_sets(3, 2)).float()
    labels = torch.tensor([[[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]], dtype=torch.float32)
    assert speaker_set_classes(labels, mapping).tolist() == [[0, 1, 4, -1]]
    logits = torch.randn(1, 4, len(mapping))
    full = powerset_ce(logits, labels, mapping)
    first_three = powerset_ce(logits[:, :3], labels[:, :3], mapping)
    assert int(full.dropped) == 1 and torch.allclose(full.loss, first_three.loss)


def test_the_loss_is_permutation_invariant_and_equals_a_hand_computed_value():
    mapping = torch.from_numpy(powerset_sets(2, 2)).float()  # {}, {0}, {1}, {0, 1}
    logits = torch.tensor([[[0.0, 3.0, 0.0, 0.0], [0.0, 3.0, 0.0, 1.0]]])
    labels = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])  # speaker "1" speaks: the model's slot 0 fits it
    result = powerset_ce(logits, labels, mapping)
    # Best permutation swaps the speakers, so both frames are class {0}; mean -log softmax of logit 3.
    expected = (math.log(math.exp(3) + 3) - 3 + math.log(math.exp(3) + 2 + math.e) - 3) / 2
    assert result.loss.item() == pytest.approx(expected, rel=1e-6)
    assert result.perm.tolist() == [[1, 0]]
    swapped = powerset_ce(logits, labels.flip(-1), mapping)
    assert swapped.loss.item() == pytest.approx(result.loss.item(), rel=1e-6)

    generator = torch.Generator().manual_seed(0)
    mapping = torch.from_numpy(powerset_sets(4, 2)).float()
    logits = torch.randn(3, 50, len(mapping), generator=generator)
    labels = (torch.rand(3, 50, 4, generator=generator) < 0.25).float()
    base = powerset_ce(logits, labels, mapping).loss
    for order in ([1, 0, 3, 2], [3, 2, 1, 0], [2, 0, 1, 3]):
        assert powerset_ce(logits, labels[..., order], mapping).loss.item() == pytest.approx(base.item(), rel=1e-6)


def test_marginals_sum_the_class_probabilities_and_decisions_take_the_most_probable_set():
    cfg = resolve("optimized", ["DIM=16", "BLOCKS=1", "HEADS=2", "LOSS=powerset"])
    model = build_model(cfg, 8)
    logits = torch.randn(2, 5, 11)
    probs = torch.softmax(logits, dim=-1)
    marginals = model.activity(logits)
    assert torch.allclose(marginals, probs @ model.mapping)
    # Summed over the speakers, the marginals are the expected number of speakers under the class probabilities.
    assert torch.allclose(marginals.sum(-1), (probs * model.mapping.sum(-1)).sum(-1), atol=1e-6)
    peaked = torch.full((1, 3, 11), -20.0)
    peaked[0, torch.arange(3), torch.tensor([0, 2, 7])] = 20.0
    decided = model.decisions(peaked, threshold=0.5)
    assert decided[0].tolist() == model.mapping[[0, 2, 7]].bool().tolist()
    assert powerset_decisions(model.activity(peaked)[0].numpy(), 2).tolist() == decided[0].tolist()
    # Three confident speakers: the decision keeps the two most probable (a class holds at most two).
    assert powerset_decisions(np.array([[0.9, 0.8, 0.7, 0.1]]), 2).tolist() == [[True, True, False, False]]


def test_a_powerset_model_trains_resumes_validates_evaluates_and_diarizes(toy, tmp_path):
    overrides = ("LOSS=powerset", "LR=3e-3", "DER_EVERY=1", "WARMUP_STEPS=1")
    history = toy.train(tmp_path / "whole", "EPOCHS=3", *overrides)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(r["val_der"] is not None and "overlap_frames_dropped" in r for r in history)
    toy.train(tmp_path / "split", "EPOCHS=3", "MAX_STEPS=4", *overrides)
    toy.train(tmp_path / "split", "EPOCHS=3", *overrides, resume=True)
    a, b = (load_checkpoint(p / "last.pt") for p in (tmp_path / "whole", tmp_path / "split"))
    assert a["config"]["loss"] == "powerset" and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])

    model = tmp_path / "whole" / "best.pt"
    report = evaluate(EvalRequest(model=model, store=toy.url, tune=True, tune_on_scored=True, device="cpu"))
    assert report["tuned"]["threshold"] == 0.5 and "powerset decisions" in report["table"]
    assert 0.0 <= report["der"]["overall"]["der"] < 1.0
    audio = next(Path(toy.view.recordings[toy.view.split("validation")[0]].source).parent.glob("*.wav"))
    summary = diarize([audio], model, tmp_path / "rttm", device="cpu")
    assert not summary.failures and (tmp_path / "rttm" / f"{audio.stem}.rttm").read_text().startswith("SPEAKER")
    assert json.loads((tmp_path / "whole" / "config.json").read_text())["loss"] == "powerset"
    assert "powerset classes hold at most 2 speakers at once" in (tmp_path / "whole" / "corpus-stats.txt").read_text()


def test_a_pit_checkpoint_of_the_previous_version_loads_as_pit_and_scores_the_same():
    lm = load_model(FIXTURES / "checkpoint-v1.pt", torch.device("cpu"))
    assert lm.config.loss == "pit" and lm.model.mapping is None and lm.inference.max_overlap is None
    feats = np.random.default_rng(0).standard_normal((900, lm.feature_config["n_mels"])).astype(np.float32)
    post = lm.posteriors(predictor(lm.model, torch.device("cpu"), torch.autocast("cpu", enabled=False)), feats, 900)
    # Written by the code of commit 759880a from the same checkpoint and features, on another CPU: sums in another
    # order differ by about sqrt(n) units of float32 roundoff (2**-24) for n terms, at most the input projection's
    # 1200 here (2e-6 of a logit), and a sigmoid's slope is at most 1/4: 1e-6 holds (measured on an AMD EPYC: 1.2e-7).
    np.testing.assert_allclose(post, np.load(FIXTURES / "checkpoint-v1-posteriors.npy"), atol=1e-6)
