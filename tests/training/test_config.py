"""Training configuration: presets carry the notebook numbers, overrides are typed and checked."""

from __future__ import annotations

import dataclasses

import pytest

from agencerdas.stores.errors import AgencerdasError
from agencerdas.training.config import PRESETS, TrainConfig, resolve

NOTEBOOK = {
    # preset: (dim, blocks, downsample, window, batch, epochs)
    "original": (256, 4, 10, 1000, 2, 30),
    "optimized": (128, 3, 15, 500, 4, 15),
    "ultra-fast": (64, 2, 20, 300, 8, 10),
}


@pytest.mark.parametrize("preset", sorted(NOTEBOOK))
def test_presets_resolve_to_the_notebook_numbers(preset):
    cfg = resolve(preset)
    assert cfg.preset == preset
    assert (cfg.dim, cfg.blocks, cfg.downsample, cfg.window, cfg.batch, cfg.epochs) == NOTEBOOK[preset]
    assert cfg.audio_cap_s == (60.0 if preset == "ultra-fast" else 0.0)
    assert cfg.window_base_frames == cfg.window * cfg.downsample
    # Everything a preset does not name keeps the default.
    defaults = TrainConfig()
    untouched = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in PRESETS[preset] and f.name != "preset"]
    assert {n: getattr(cfg, n) for n in untouched} == {n: getattr(defaults, n) for n in untouched}


def test_every_preset_resolves_and_round_trips():
    for preset in PRESETS:
        cfg = resolve(preset)
        assert TrainConfig(**cfg.to_dict()) == cfg
    assert resolve("throughput").batch == 64


def test_overrides_are_case_insensitive_and_typed():
    cfg = resolve("optimized", ["EPOCHS=3", "lr=5e-4", "compile=true", "Pooling=mean", "audio-cap-s=30", " DIM = 64 "])
    assert cfg.epochs == 3 and type(cfg.epochs) is int
    assert cfg.lr == 5e-4 and type(cfg.lr) is float
    assert cfg.compile is True
    assert cfg.pooling == "mean"
    assert cfg.audio_cap_s == 30.0 and type(cfg.audio_cap_s) is float
    assert cfg.dim == 64
    assert resolve("optimized", ["COMPILE=no"]).compile is False
    assert resolve("optimized", ["lr=1"]).lr == 1.0  # an int literal for a float field


def test_overrides_apply_after_the_preset():
    cfg = resolve("original", ["window=200"])
    assert (cfg.window, cfg.dim, cfg.downsample) == (200, 256, 10)
    assert resolve("original", []) == resolve("original", None) == resolve("original")


def test_unknown_override_lists_valid_names():
    with pytest.raises(AgencerdasError) as info:
        resolve("optimized", ["EPOCH=3"])
    message = str(info.value)
    assert "EPOCH=3" in message
    for name in ("epochs", "lr", "dim", "num_workers", "checkpoint_every"):
        assert name in message


@pytest.mark.parametrize("item, says", [("EPOCHS", "has no value; give it as EPOCHS=VALUE"),
                                         ("preset=original", "valid names")])
def test_override_without_value_or_of_the_preset_is_rejected(item, says):
    with pytest.raises(AgencerdasError, match=says):
        resolve("optimized", [item])


def test_unknown_preset_lists_presets():
    with pytest.raises(AgencerdasError) as info:
        resolve("turbo")
    assert "turbo" in str(info.value)
    for preset in PRESETS:
        assert preset in str(info.value)


@pytest.mark.parametrize(
    "item, words",
    [("EPOCHS=three", "int"), ("lr=fast", "float"), ("compile=maybe", "bool"), ("batch=2.5", "int")],
)
def test_badly_typed_override_names_the_type(item, words):
    with pytest.raises(AgencerdasError, match=words):
        resolve("optimized", [item])


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["DIM=100", "HEADS=3"], "divisible"),
        (["HEADS=0"], "heads must be >= 1"),
        (["EPOCHS=0"], "epochs"),
        (["WINDOW=-5"], "window"),
        (["FF_MULT=0"], "ff_mult"),
        (["DROPOUT=1.5"], "dropout"),
        (["THRESHOLD=1"], "threshold"),
        (["POOLING=max"], "pooling"),
        (["PRECISION=fp8"], "precision"),
        (["LR=0"], "lr"),
        (["NUM_WORKERS=-2"], "num_workers"),
        (["THREADS=-1"], "threads"),
    ],
)
def test_invalid_values_are_agencerdas_errors(overrides, words):
    with pytest.raises(AgencerdasError, match=words):
        resolve("optimized", overrides)


def test_auto_loader_workers_leave_a_small_cpu_machine_to_the_model(monkeypatch):
    import torch

    from agencerdas.training import runtime

    monkeypatch.setattr(runtime, "cores", lambda: 2)
    assert runtime.loader_workers(-1, torch.device("cpu")) == 0
    assert runtime.loader_workers(3, torch.device("cpu")) == 3
    monkeypatch.setattr(runtime, "cores", lambda: 16)
    assert runtime.loader_workers(-1, torch.device("cpu")) == 2
    assert runtime.loader_workers(-1, torch.device("cuda")) == 4
