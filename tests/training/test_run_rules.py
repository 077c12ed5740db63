"""One criterion per run for best.pt, no silent resume on other data, per-rank dropout under DDP,
and bf16 only where the GPU computes it natively."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from agencerdas.commands import train_summary
from agencerdas.stores import Store, load_view, save_view
from agencerdas.stores.errors import AgencerdasError
from agencerdas.training import runtime
from agencerdas.training.checkpoint import load_checkpoint
from agencerdas.training.inputs import load_data
from agencerdas.training.loop import Trainer, rank_seed, train
from agencerdas.training.runtime import Runtime


@pytest.fixture
def own_store(toy, tmp_path):
    """A copy of the toy store that a test may change."""
    shutil.copytree(toy.store.root, tmp_path / "store")
    return str(tmp_path / "store")


def test_without_a_validation_split_best_is_the_last_epoch_and_the_summary_says_so(toy, own_store, tmp_path):
    store = Store(own_store, create=False)
    save_view(store, dataclasses.replace(load_view(store, "default"), validation_fraction=0.0))
    cfg = toy.config("EPOCHS=2")
    history = train(cfg, own_store, "default", tmp_path / "run", progress=False)
    last, best = load_checkpoint(tmp_path / "run" / "last.pt"), load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["step"] == last["step"] == history[-1]["step"] and best["epoch"] == 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["best_criterion"] == "last"
    assert "best.pt: the last epoch (the view has no validation split)" in train_summary(cfg, tmp_path / "run", history)


def test_with_der_every_second_epoch_best_is_chosen_by_der_alone(toy, tmp_path):
    history = toy.train(tmp_path / "run", "EPOCHS=3", "DER_EVERY=2")
    assert [r.get("val_der") is not None for r in history] == [False, True, False]
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    # Epoch 3's validation loss never competes with epoch 2's DER: one criterion for the run.
    assert best["epoch"] == 2 and best["best"] == history[1]["val_der"] and best["best_criterion"] == "val_der"
    summary = train_summary(toy.config("EPOCHS=3", "DER_EVERY=2"), tmp_path / "run", history)
    assert "lowest validation DER" in summary and "annotation turns" in summary


def test_resume_on_a_changed_view_is_refused_unless_asked(toy, own_store, tmp_path):
    cfg = toy.config("EPOCHS=2", "MAX_STEPS=2", "EMBED_LOSS_WEIGHT=0")
    train(cfg, own_store, "default", tmp_path / "run", progress=False)
    with_head = toy.config("EPOCHS=2", "MAX_STEPS=2")
    train(with_head, own_store, "default", tmp_path / "head", progress=False)
    store = Store(own_store, create=False)
    view = load_view(store, "default")
    dropped = sorted(view.recordings)[0]
    save_view(store, dataclasses.replace(view, recordings={k: v for k, v in view.recordings.items() if k != dropped}))
    resumed = toy.config("EPOCHS=2", "EMBED_LOSS_WEIGHT=0")
    with pytest.raises(AgencerdasError, match=f"1 recording\\(s\\) removed: {dropped}.*--resume-on-changed-view"):
        train(resumed, own_store, "default", tmp_path / "run", resume=True, progress=False)
    history = train(resumed, own_store, "default", tmp_path / "run", resume=True, progress=False, allow_view_change=True)
    assert history[-1]["epoch"] == 2
    # The speaker table has one row per identity of the old train split: it cannot follow, and says what can.
    with pytest.raises(AgencerdasError, match="speakers changed .* identities then.*INIT_FROM="):
        train(toy.config("EPOCHS=2"), own_store, "default", tmp_path / "head", resume=True, progress=False,
              allow_view_change=True)


def test_other_ranks_draw_their_own_dropout_masks_from_the_same_initial_weights(toy, tmp_path):
    cfg = toy.config("EPOCHS=1")
    data = load_data(cfg, toy.url, "default", {})
    cpu = torch.device("cpu")
    masks, weights = [], []
    for rank in (0, 1, 2):
        trainer = Trainer(cfg, data, tmp_path / f"rank{rank}", Runtime(cpu, None, rank=rank), resume=False, progress=False)
        weights.append(trainer.model.state_dict())
        masks.append(torch.nn.functional.dropout(torch.ones(64), 0.5, training=True))
    for state in weights[1:]:
        assert all(torch.equal(state[k], weights[0][k]) for k in state)
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])
    assert len({rank_seed(cfg.seed, r) for r in range(1, 9)}) == 8


@pytest.mark.parametrize("capability, expected", [((7, 5), torch.float16), ((8, 0), torch.bfloat16),
                                                  ((9, 0), torch.bfloat16)])
def test_auto_precision_uses_bf16_only_on_native_hardware(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation counts there
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert runtime._amp_dtype("auto", torch.device("cuda", 0)) == expected
    assert runtime._amp_dtype("auto", torch.device("cpu")) is None
