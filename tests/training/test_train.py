"""`agencerdas train` end to end on the toy store: learning, run artifacts, exact resume, precision, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from agencerdas.stores.errors import AgencerdasError
from agencerdas.training import loop
from agencerdas.training.checkpoint import load_checkpoint, save_checkpoint
from agencerdas.training.config import PRESETS
from agencerdas.training.model import build_model


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"tensors differ: {different}"


@pytest.mark.parametrize("preset", list(PRESETS))
def test_each_preset_learns_and_writes_its_run(toy, tmp_path, preset):
    """Two epochs of every preset (shrunk): the loss falls and the run directory is complete."""
    out = tmp_path / "run"
    history = toy.train(out, "EPOCHS=2", "LR=3e-3", "WARMUP_STEPS=1", preset=preset)
    cfg = toy.config("EPOCHS=2", "LR=3e-3", "WARMUP_STEPS=1", preset=preset)

    assert [r["epoch"] for r in history] == [1, 2]
    first, second = history
    assert second["train_loss"] < first["train_loss"], history
    assert all(math.isfinite(r["val_loss"]) for r in history)
    # Per-epoch windows: ceil(1200 / window_base_frames) per train recording, every epoch.
    per_recording = -(-1200 // cfg.window_base_frames)
    assert first["windows"] == second["windows"] == 5 * per_recording
    assert second["step"] == 2 * -(-5 * per_recording // cfg.batch)

    # The config, and the one criterion that picks best.pt (TINY computes no DER: the validation loss).
    assert json.loads((out / "config.json").read_text()) == {**cfg.to_dict(), "best_criterion": "val_loss",
                                                                "initialised_from": None}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in records if r["kind"] == "epoch"] == history
    last, best = load_checkpoint(out / "last.pt"), load_checkpoint(out / "best.pt")
    assert last["config"] == best["config"] == cfg.to_dict()
    assert (last["epoch"], last["batch_in_epoch"], last["step"]) == (2, 0, second["step"])
    assert last["feature_config"] == toy.view.feature_config and last["view"] == "default"
    assert last["best"] == min(r["val_loss"] for r in history)
    # strict: the checkpoint is the model of this config, with a speaker table of the train split's identities
    model = build_model(cfg, toy.view.feature_config["n_mels"], identities=len(best["model"]["speaker_table"]))
    model.load_state_dict(best["model"])


def test_the_loss_falls_clearly_on_the_learnable_corpus(toy, tmp_path):
    """A few epochs take the window loss well below its first logged value, and validation follows."""
    history = toy.train(tmp_path / "run", "EPOCHS=6", "LR=3e-3", "WARMUP_STEPS=1", "LOG_EVERY=1", "DROPOUT=0")
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if r["kind"] == "step"]
    assert steps[0]["step"] == 1
    assert history[-1]["train_loss"] < 0.75 * steps[0]["loss"], (steps[0], history[-1])
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    # The epoch's train loss is the mean over its batches (3, the last one short), as the last step record says.
    for record in history:
        last_step = [r for r in steps if r["epoch"] == record["epoch"] - 1][-1]
        assert last_step["step"] == record["step"] == 3 * record["epoch"]
        assert record["train_loss"] == pytest.approx(last_step["loss"], rel=1e-6)


def _resume_matches(toy, tmp_path, overrides, stop_overrides, crash_at_step=None, monkeypatch=None):
    """Run A straight through; run B stopped early (or crashed), then resumed; both must end identical."""
    a, b = tmp_path / "a", tmp_path / "b"
    toy.train(a, *overrides)
    if crash_at_step is None:
        toy.train(b, *overrides, *stop_overrides)
    else:
        step = loop.Trainer._train_step

        def crashing(self, *args):
            if self.step == crash_at_step:
                raise KeyboardInterrupt("simulated kill")
            return step(self, *args)

        with monkeypatch.context() as patch:
            patch.setattr(loop.Trainer, "_train_step", crashing)
            with pytest.raises(KeyboardInterrupt):
                toy.train(b, *overrides, *stop_overrides)
    stopped = load_checkpoint(b / "last.pt")
    resumed = toy.train(b, *overrides, resume=True)
    end_a, end_b = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert (end_b["epoch"], end_b["step"]) == (end_a["epoch"], end_a["step"])
    _same_weights(end_a["model"], end_b["model"])
    for group_a, group_b in zip(end_a["optimizer"]["state"].values(), end_b["optimizer"]["state"].values()):
        assert all(torch.equal(group_a[k], group_b[k]) for k in group_a)
    assert end_a["scheduler"] == end_b["scheduler"]
    # The resumed run's log reads like the uninterrupted one's: no repeated steps, same epoch losses.
    assert _logged(b) == _logged(a)
    return stopped, resumed


def _logged(run) -> list[tuple]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["kind"], r["epoch"], r["step"], round(r.get("train_loss", r.get("loss")), 5)) for r in records]


@pytest.mark.parametrize(
    "workers, dropout, path",
    [("NUM_WORKERS=0", "DROPOUT=0.1", "false"), ("NUM_WORKERS=1", "DROPOUT=0.3", "false"),
     ("NUM_WORKERS=0", "DROPOUT=0.3", "true")],
    ids=["inline", "worker", "resident"],
)
def test_resume_after_an_epoch_equals_an_uninterrupted_run(toy, tmp_path, workers, dropout, path):
    # 10 windows of 4 per epoch: 3 steps; MAX_STEPS=3 stops B after its first epoch.
    stopped, resumed = _resume_matches(toy, tmp_path, ["EPOCHS=3", workers, dropout, f"DATA_ON_DEVICE={path}"],
                                       ["MAX_STEPS=3"])
    assert (stopped["epoch"], stopped["batch_in_epoch"], stopped["step"]) == (1, 0, 3)
    assert [r["epoch"] for r in resumed] == [2, 3]


def test_resume_inside_an_epoch_after_max_steps(toy, tmp_path):
    stopped, resumed = _resume_matches(toy, tmp_path, ["EPOCHS=3"], ["MAX_STEPS=4"])
    assert (stopped["epoch"], stopped["batch_in_epoch"], stopped["step"]) == (1, 1, 4)
    assert [r["epoch"] for r in resumed] == [2, 3]
    assert (tmp_path / "b" / "best.pt").exists()


def test_resume_after_a_crash_from_a_mid_epoch_checkpoint(toy, tmp_path, monkeypatch):
    """CHECKPOINT_EVERY=2 saved step 4 (epoch 2, batch 1); the run is killed during step 6."""
    stopped, _ = _resume_matches(toy, tmp_path, ["EPOCHS=3", "CHECKPOINT_EVERY=2", "DROPOUT=0.2"], [],
                                 crash_at_step=5, monkeypatch=monkeypatch)
    assert (stopped["epoch"], stopped["batch_in_epoch"], stopped["step"]) == (1, 1, 4)


@pytest.mark.parametrize("path", ["NUM_WORKERS=1 DATA_ON_DEVICE=false", "DATA_ON_DEVICE=true"],
                         ids=["worker", "resident"])
def test_augmented_training_resumes_exactly_inside_an_epoch(toy, tmp_path, path):
    augment = ["AUG_WARP=0.1", "AUG_GAIN_DB=6", "AUG_TILT_DB=6", "AUG_FREQ_MASKS=2", "AUG_MASK_BINS=8"]
    stopped, _ = _resume_matches(toy, tmp_path, ["EPOCHS=2", *path.split(), *augment], ["MAX_STEPS=4"])
    assert (stopped["epoch"], stopped["batch_in_epoch"], stopped["step"]) == (1, 1, 4)
    assert stopped["config"]["aug_warp"] == 0.1


def test_gradient_accumulation_closes_each_epoch_and_resumes_exactly(toy, tmp_path):
    """3 batches per epoch with ACCUMULATE=2: two optimizer steps per epoch, nothing carried over."""
    stopped, resumed = _resume_matches(toy, tmp_path, ["EPOCHS=3", "ACCUMULATE=2"], ["MAX_STEPS=2"])
    assert (stopped["epoch"], stopped["batch_in_epoch"], stopped["step"]) == (1, 0, 2)
    assert [r["step"] for r in resumed] == [4, 6]


def test_bf16_autocast_trains_on_cpu(toy, tmp_path):
    history = toy.train(tmp_path / "run", "EPOCHS=1", "PRECISION=bf16", "DER_EVERY=1")
    record = history[0]
    assert record["precision"] == "bf16"
    assert all(math.isfinite(record[k]) for k in ("train_loss", "val_loss", "val_frame_error", "val_der"))
    assert all(torch.isfinite(t).all() for t in load_checkpoint(tmp_path / "run" / "last.pt")["model"].values())


def test_missing_store_is_an_error(toy, tmp_path):
    with pytest.raises(AgencerdasError, match="no agencerdas store"):
        loop.train(toy.config(), str(tmp_path / "nowhere"), "default", tmp_path / "run", progress=False)
    assert not (tmp_path / "nowhere").exists()


def test_missing_view_is_an_error_listing_the_views(toy, tmp_path):
    with pytest.raises(AgencerdasError, match=r"no view 'other'.*default"):
        loop.train(toy.config(), toy.url, "other", tmp_path / "run", progress=False)


def test_window_longer_than_every_recording_is_an_error(toy, tmp_path):
    with pytest.raises(AgencerdasError, match="WINDOW"):
        toy.train(tmp_path / "run", "WINDOW=100")  # 100 x 15 base frames > 1200
    with pytest.raises(AgencerdasError, match="WINDOW"):
        toy.train(tmp_path / "run", "AUDIO_CAP_S=5")  # 600 base frames > 500 after the cap


def test_cuda_without_a_gpu_is_an_error(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(AgencerdasError, match="no CUDA"):
        toy.train(tmp_path / "run", "DEVICE=cuda")
    with pytest.raises(AgencerdasError, match="unknown device"):
        toy.train(tmp_path / "run", "DEVICE=tpu")


def test_resume_with_a_changed_model_setting_is_an_error(toy, tmp_path):
    toy.train(tmp_path / "run", "EPOCHS=1")
    with pytest.raises(AgencerdasError, match="changed settings dim"):
        toy.train(tmp_path / "run", "EPOCHS=2", "DIM=32", resume=True)
    toy.train(tmp_path / "run", "EPOCHS=2", "LOG_EVERY=1", resume=True)  # only resumable settings changed


def test_a_resume_that_would_pick_best_by_another_criterion_names_der_every_with_the_rest(toy, tmp_path):
    """DER_EVERY may change while best.pt is picked as before; one error names every setting to give back."""
    toy.train(tmp_path / "run", "EPOCHS=1")  # DER_EVERY=0: best.pt by the validation loss
    with pytest.raises(AgencerdasError, match="changed settings der_every, dim .*DER_EVERY=1 would pick best.pt by "
                                              "val_der, this run picks it by val_loss.*resume it with DER_EVERY=0 "
                                              "DIM=16 "):
        toy.train(tmp_path / "run", "EPOCHS=2", "DER_EVERY=1", "DIM=32", resume=True)
    toy.train(tmp_path / "run", "EPOCHS=2", "DER_EVERY=0", "DIM=16", resume=True)


def test_resume_without_a_checkpoint_is_an_error(toy, tmp_path):
    with pytest.raises(AgencerdasError, match="cannot resume: .*last.pt does not exist"):
        toy.train(tmp_path / "run", resume=True)


def test_mid_epoch_checkpoint_resumes_only_with_the_same_world_size(toy, tmp_path):
    toy.train(tmp_path / "run", "EPOCHS=2", "MAX_STEPS=1")
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (ckpt["batch_in_epoch"], ckpt["world"]) == (1, 1)
    save_checkpoint(tmp_path / "run" / "last.pt", {**ckpt, "world": 2})
    with pytest.raises(AgencerdasError, match="same number of processes"):
        toy.train(tmp_path / "run", "EPOCHS=2", resume=True)


def test_a_new_run_in_an_old_directory_starts_a_new_metrics_log_without_the_old_tuning(toy, tmp_path):
    toy.train(tmp_path / "run", "EPOCHS=2")
    (tmp_path / "run" / "tuned.json").write_text('{"threshold": 0.3, "median_frames": 5}')  # `evaluate --tune`
    toy.train(tmp_path / "run", "EPOCHS=2", resume=True)
    assert (tmp_path / "run" / "tuned.json").exists()  # the same model, continued: its tuning holds
    toy.train(tmp_path / "run", "EPOCHS=1")
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "epoch"]
    assert epochs == [1]
    assert not (tmp_path / "run" / "tuned.json").exists()  # another model: the old tuning is not its own
