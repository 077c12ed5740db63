"""Fine-tuning (INIT_FROM) and TensorBoard: a new run starts from another run's weights with its own
optimizer and schedule, names what does not fit, records where it came from and resumes exactly;
every run writes TensorBoard event files that TensorBoard can read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agencerdas.stores import hash_file
from agencerdas.stores.errors import AgencerdasError
from agencerdas.training.checkpoint import load_checkpoint
from agencerdas.training.inputs import load_data
from agencerdas.training.loop import Trainer
from agencerdas.training.runtime import Runtime
from agencerdas.training.windows import Normalizer


@pytest.fixture(scope="module")
def source(toy, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("source")
    toy.train(out, "EPOCHS=2", "LR=3e-3", "DER_EVERY=1")
    return out / "best.pt"


def _trainer(toy, out: Path, *overrides: str) -> Trainer:
    cfg = toy.config(*overrides)
    return Trainer(cfg, load_data(cfg, toy.url, "default", {}), out, Runtime(torch.device("cpu"), None),
                   resume=False, progress=False)


def test_a_fine_tuned_run_starts_from_the_source_weights_with_a_fresh_optimizer(toy, source, tmp_path):
    trainer = _trainer(toy, tmp_path / "ft", f"INIT_FROM={source}")
    weights = load_checkpoint(source)["model"]
    # every weight but the speaker table, whose rows are the source corpus's speakers: this run has its own
    assert all(torch.equal(trainer.model.state_dict()[k], v) for k, v in weights.items() if k != "speaker_table")
    assert not torch.equal(trainer.model.speaker_table.detach(), weights["speaker_table"])
    assert trainer.step == 0 and not trainer.optimizer.state  # a fresh optimizer and schedule
    assert trainer.normalizer.to_dict() == load_checkpoint(source)["normalizer"]  # INIT_NORMALIZER=checkpoint
    # A source whose normaliser is not this split's: "checkpoint" keeps it, "refit" fits this run's train split.
    shifted = load_checkpoint(source)
    shifted["normalizer"]["mean"] = [m + 1.0 for m in shifted["normalizer"]["mean"]]
    torch.save(shifted, tmp_path / "shifted.pt")
    kept = _trainer(toy, tmp_path / "kept", f"INIT_FROM={tmp_path / 'shifted.pt'}")
    refit = _trainer(toy, tmp_path / "refit", f"INIT_FROM={tmp_path / 'shifted.pt'}", "INIT_NORMALIZER=refit")
    data = refit.data
    assert kept.normalizer.to_dict() == shifted["normalizer"]
    assert refit.normalizer.to_dict() == Normalizer.fit(data.store, data.train, data.scored_of(data.train)).to_dict()
    assert refit.provenance["xxh3"] == hash_file(tmp_path / "shifted.pt")


def test_a_different_encoder_is_refused_naming_the_fields_and_a_new_head_is_initialised(toy, source, tmp_path):
    with pytest.raises(AgencerdasError, match=r"differs from this run's in dim \(16 there, 32 here\); blocks"):
        _trainer(toy, tmp_path / "bad", f"INIT_FROM={source}", "DIM=32", "BLOCKS=2")
    trainer = _trainer(toy, tmp_path / "powerset", f"INIT_FROM={source}", "LOSS=powerset")
    weights = load_checkpoint(source)["model"]
    kept = [k for k in weights if not k.startswith(("head.", "speaker_table"))]
    assert all(torch.equal(trainer.model.state_dict()[k], weights[k]) for k in kept)
    assert trainer.model.head.out_features == 11 and trainer.provenance["head_reinitialised"]


def test_provenance_is_recorded_and_a_fine_tuned_run_resumes_exactly(toy, source, tmp_path):
    overrides = (f"INIT_FROM={source}", "FREEZE_BLOCKS=1", "LR=1e-3")
    whole = tmp_path / "whole"
    toy.train(whole, "EPOCHS=2", *overrides)
    toy.train(tmp_path / "split", "EPOCHS=2", "MAX_STEPS=4", *overrides)
    toy.train(tmp_path / "split", "EPOCHS=2", *overrides, resume=True)
    a, b = (load_checkpoint(p / "last.pt") for p in (whole, tmp_path / "split"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    provenance = json.loads((whole / "config.json").read_text())["initialised_from"]
    assert provenance["xxh3"] == hash_file(source) == a["initialised_from"]["xxh3"] == b["initialised_from"]["xxh3"]
    assert provenance["path"] == str(source.resolve())
    # FREEZE_BLOCKS=1: the input projection and the first block kept the source's weights.
    weights = load_checkpoint(source)["model"]
    assert all(torch.equal(a["model"][k], weights[k]) for k in weights if k.startswith(("input_proj.", "blocks.0.")))
    assert not torch.equal(a["model"]["head.weight"], weights["head.weight"])
    toy.train(tmp_path / "split", "EPOCHS=3", "FREEZE_BLOCKS=1", "LR=1e-3", resume=True)  # the source is not needed


def test_overwrite_keeps_nothing_of_the_old_run(toy, source, tmp_path):
    from agencerdas import train

    out = tmp_path / "run"
    train(toy.url, out=out, overrides=[*toy.tiny, "EPOCHS=2", "DER_EVERY=1"], progress=False)
    (out / "eval").mkdir()
    old_events = set(out.glob("events.out.tfevents.*"))
    train(toy.url, out=out, overrides=[*toy.tiny, "EPOCHS=1", "MAX_STEPS=1"], overwrite=True, progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "epoch"] == [1]
    assert load_checkpoint(out / "best.pt")["step"] == 1  # the new run's, though it stopped inside epoch 1
    assert not old_events & set(out.glob("events.out.tfevents.*")) and not (out / "eval").exists()


def test_every_run_writes_tensorboard_events_tensorboard_can_read(toy, tmp_path):
    out = tmp_path / "run"
    history = toy.train(out, "EPOCHS=5", "DER_EVERY=1", "LOG_EVERY=1")
    events = EventAccumulator(str(out), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/windows_per_s", "train/peak_mem_mb",
            "epoch/train_loss", "val/loss", "val/frame_error", "val/der"} <= scalars
    assert [e.value for e in events.Scalars("val/der")] == pytest.approx([r["val_der"] for r in history])
    assert len(events.Scalars("train/loss")) == history[-1]["step"]
    assert "val/timeline" in events.Tags()["images"]  # epoch 5 and the last epoch
    hparams = [p for p in out.rglob("events.out.tfevents.*")]
    assert hparams and (out / "metrics.jsonl").exists()
