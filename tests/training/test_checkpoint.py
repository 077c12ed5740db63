"""Checkpoints are untrusted input: loading one never runs code, a broken one is refused by name,
checkpoints of the previous version still load, and a diverged run never writes non-finite weights."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from agencerdas.inference.model import load_model
from agencerdas.stores.errors import AgencerdasError
from agencerdas.training import loop, objective
from agencerdas.training.checkpoint import CHECKPOINT_VERSION, load_checkpoint, rng_state, save_checkpoint, set_rng_state

#: A best.pt written by the version-1 writer (commit 759880a: NumPy RNG arrays, every GPU's CUDA state).
V1 = Path(__file__).parent / "fixtures" / "checkpoint-v1.pt"


class _Payload:
    """Unpickling this creates ``marker``: the shape of any code-execution payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture(scope="module")
def good(toy, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt-run")
    toy.train(out, "EPOCHS=1")
    return out / "best.pt"


def _rewrite(source: Path, target: Path, **changes) -> Path:
    """``source``'s payload with ``changes`` applied (None removes an entry), written as ``target``."""
    payload = load_checkpoint(source)
    for name, value in changes.items():
        if value is None:
            payload.pop(name)
        else:
            payload[name] = value
    torch.save(payload, target)
    return target


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_crafted_checkpoint_runs_no_code(good, tmp_path, legacy):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "best.pt"
    payload = {**load_checkpoint(good), "model": _Payload(marker)}
    torch.save(payload, crafted, _use_new_zipfile_serialization=not legacy)

    for load in (lambda: load_checkpoint(crafted), lambda: load_checkpoint(crafted, for_resume=True),
                 lambda: load_model(crafted, torch.device("cpu"))):
        with pytest.raises(AgencerdasError, match=str(crafted)) as error:
            load()
        assert ("legacy" in str(error.value)) if legacy else ("could run code" in str(error.value))
    assert not marker.exists()


@pytest.mark.parametrize("change, words", [
    ({"model": None}, "no 'model' entry"),
    ({"feature_config": None}, "no 'feature_config' entry"),
    ({"config": {"dim": "abc"}}, "dim must be int"),
    ({"config": {"dim": 0}}, "dim must be >= 1"),
    ({"config": {"no_such_field": 1}}, "unknown training config field"),
    ({"feature_config": {"n_mels": "80", "hop_length": 160, "sample_rate": 16000}}, "n_mels must be a positive int"),
    ({"normalizer": {"mean": [0.0], "std": [1.0]}}, "normalizer mean must be a list of"),
    ({"model": {"encoder.weight": [1, 2]}}, "must map parameter names to tensors"),
    ({"version": CHECKPOINT_VERSION + 1}, "newer than this agencerdas supports"),
    ({"model": {"not.a.parameter": torch.zeros(2)}}, "do not fit the model"),
    ({"config": {"dim": 16, 3: "a key that is not a name"}}, "unknown training config field"),
])
def test_a_checkpoint_without_the_written_structure_is_refused_by_name(good, tmp_path, change, words):
    broken = _rewrite(good, tmp_path / "broken.pt", **change)
    with pytest.raises(AgencerdasError, match=str(broken)) as error:
        load_model(broken, torch.device("cpu"))
    assert words in str(error.value)


def test_a_feature_config_the_pipeline_cannot_compute_is_refused_by_name(good, tmp_path):
    features = {**load_checkpoint(good)["feature_config"], "fmin": "low", "colour": "blue"}
    broken = _rewrite(good, tmp_path / "features.pt", feature_config=features)
    with pytest.raises(AgencerdasError, match=f"{broken}: not a usable agencerdas checkpoint: its feature_config"):
        load_model(broken, torch.device("cpu"))


def test_a_checkpoint_saved_with_a_data_budget_above_today_s_cap_still_loads(good, tmp_path):
    config = {**load_checkpoint(good)["config"], "data_budget": 0.95}  # allowed before the cap at 0.9
    lm = load_model(_rewrite(good, tmp_path / "old.pt", config=config), torch.device("cpu"))
    assert lm.config.data_budget == 0.9


def test_a_resume_needs_the_training_state(good, tmp_path):
    broken = _rewrite(good, tmp_path / "last.pt", optimizer=None)
    load_checkpoint(broken)  # enough for inference
    with pytest.raises(AgencerdasError, match="no 'optimizer' entry"):
        load_checkpoint(broken, for_resume=True)


def test_checkpoints_of_version_1_still_load_for_inference_and_resume():
    ckpt = load_checkpoint(V1, for_resume=True)
    assert ckpt["version"] == 1
    lm = load_model(V1, torch.device("cpu"))
    feats = np.random.default_rng(0).standard_normal((900, lm.feature_config["n_mels"])).astype(np.float32)
    from agencerdas.training.posteriors import predictor

    post = lm.posteriors(predictor(lm.model, torch.device("cpu"), torch.autocast("cpu", enabled=False)), feats, 900)
    assert post.shape[1] == lm.config.max_speakers and np.isfinite(post).all()
    set_rng_state(ckpt["rng"])  # the NumPy array form of version 1
    assert np.random.get_state()[1].tolist() == ckpt["rng"]["numpy"][1].tolist()


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    save_checkpoint(tmp_path / "c.pt", {"config": {}, "rng": rng_state()})
    expected = (random.random(), np.random.random(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(torch.load(tmp_path / "c.pt", weights_only=True)["rng"])
    assert (random.random(), np.random.random(), torch.rand(1).item()) == expected


def _nan_after_first_call(monkeypatch):
    """From its second call on, the training loss is NaN (so are the gradients): a diverging run."""
    real, calls = objective.pit_bce, []

    def diverging(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(1)
        return result if len(calls) == 1 else result._replace(loss=result.loss * float("nan"))

    monkeypatch.setattr(objective, "pit_bce", diverging)


def test_a_diverging_run_stops_with_a_message_and_keeps_its_last_finite_checkpoint(toy, tmp_path, monkeypatch):
    out = tmp_path / "run"
    toy.train(out, "EPOCHS=1")
    before = load_checkpoint(out / "last.pt")
    _nan_after_first_call(monkeypatch)
    with pytest.raises(AgencerdasError, match="training diverged at step .*lower LR"):
        toy.train(out, "EPOCHS=2", resume=True)
    after = load_checkpoint(out / "last.pt")
    assert after["step"] == before["step"]
    assert all(torch.equal(after["model"][k], before["model"][k]) for k in before["model"])


def test_no_checkpoint_is_written_with_non_finite_weights(toy, tmp_path, monkeypatch):
    """Even if the weights turn non-finite by a path the gradient check does not see."""
    real_epoch = loop.Trainer._epoch

    def poisoning(self):
        record = real_epoch(self)
        with torch.no_grad():
            next(self.model.parameters()).fill_(float("inf"))
        return record

    monkeypatch.setattr(loop.Trainer, "_epoch", poisoning)
    with pytest.raises(AgencerdasError, match="weights hold NaN or inf"):
        toy.train(tmp_path / "run", "EPOCHS=1")
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "best.pt").exists()


def test_inference_names_a_checkpoint_with_non_finite_weights_or_posteriors(good, tmp_path):
    weights = load_checkpoint(good)["model"]
    # a weight inference uses (the speaker table is training's only)
    name = next(k for k, v in weights.items() if v.is_floating_point() and v.dim() == 2 and k != "speaker_table")
    nan = _rewrite(good, tmp_path / "nan.pt", model={**weights, name: torch.full_like(weights[name], float("nan"))})
    with pytest.raises(AgencerdasError, match=f"{nan}: holds non-finite"):
        load_model(nan, torch.device("cpu"))

    huge = _rewrite(good, tmp_path / "huge.pt", model={k: v * 3e38 if v.is_floating_point() else v
                                                      for k, v in weights.items()})
    lm = load_model(huge, torch.device("cpu"))  # finite weights, but their products overflow
    from agencerdas.training.posteriors import predictor

    feats = np.ones((400, lm.feature_config["n_mels"]), np.float32)
    with pytest.raises(AgencerdasError, match=f"checkpoint {huge} gives non-finite posteriors"):
        lm.posteriors(predictor(lm.model, torch.device("cpu"), torch.autocast("cpu", enabled=False)), feats, 400)


def test_a_config_with_every_numeric_field_checked():
    from agencerdas.training.config import TrainConfig, resolve

    for override in ("LR=nan", "LR=inf", "SEED=-1", "GRAD_CLIP=0", "DROPOUT=1", "SIM_PROB=-0.1", "WARMUP_STEPS=-1",
                     "AUG_GAIN_DB=inf", "DATA_BUDGET=0", "LOG_EVERY=0", "COLLAR_S=-1", "MIN_LR_RATIO=2"):
        name = override.partition("=")[0].lower()
        with pytest.raises(AgencerdasError, match=name):
            resolve("optimized", [override])
    with pytest.raises(AgencerdasError, match="fill_speech must be bool"):
        TrainConfig.from_dict({"fill_speech": 1})
    assert dataclasses.replace(resolve("optimized"), lr=1).lr == 1  # an int is a float
