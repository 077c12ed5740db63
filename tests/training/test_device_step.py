"""The GPU path, checked where a CPU can check it: a resident training step that never waits for the
device, fp16 with a real GradScaler (and its exact resume), fused AdamW, torch.compile, and the
defects a CPU run cannot see (per-device RNG, one GPU per rank, the memory budget, the attention mask)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from agencerdas.bench.roundtrips import RoundTrips
from agencerdas.pipeline.runner import FeaturesRequest, build_features
from agencerdas.stores.errors import AgencerdasError
from tests.builders import make_corpus
from agencerdas.training import checkpoint, resident, runtime
from agencerdas.training.config import resolve
from agencerdas.training.inputs import load_data
from agencerdas.training.loop import Trainer
from agencerdas.training.runtime import Runtime

#: Windows of 600 base frames over 8 s recordings (one cut at 4 s: a padded window) with a UEM over [2 s, 6 s).
TINY = ["DIM=16", "BLOCKS=1", "HEADS=2", "WINDOW=40", "BATCH=4", "NUM_WORKERS=0", "DER_EVERY=0", "DEVICE=cpu"]


@pytest.fixture(scope="module")
def uem_store(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("device-step")
    audio, rttm = make_corpus(root / "corpus", n=5, seconds=8.0, formats=("wav",), rates=(16000,))
    for path in sorted(audio.glob("*.wav")):
        (audio / f"{path.stem}.uem").write_text(f"{path.stem} 1 2.0 6.0\n")
    _shorten(audio / "rec04.wav", rttm / "rec04.rttm", 4.0)  # shorter than a window: a padded one
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AGENCERDAS_CACHE_DIR", str(root / "cache"))
        summary = build_features(FeaturesRequest(audio, str(root / "store"), rttm_dir=rttm, jobs=1, progress=False,
                                                 validation_fraction=0.0))
    assert summary.ok, summary.format()
    return str(root / "store")


def _shorten(wav: Path, rttm: Path, seconds: float) -> None:
    """Cut a recording and its turns at ``seconds``."""
    signal, rate = sf.read(wav, dtype="float32")
    sf.write(wav, signal[: int(seconds * rate)], rate)
    lines = []
    for line in rttm.read_text().splitlines():
        fields = line.split()
        start, duration = float(fields[3]), float(fields[4])
        if start < seconds:
            fields[4] = f"{min(duration, seconds - start):.3f}"
            lines.append(" ".join(fields))
    rttm.write_text("\n".join(lines) + "\n")


def _trainer(store: str, out: Path, *overrides: str) -> Trainer:
    cfg = resolve("optimized", [*TINY, *overrides])
    return Trainer(cfg, load_data(cfg, store, "default", {}), out, Runtime(torch.device("cpu"), None), resume=False,
                   progress=False)


def test_a_resident_training_step_reads_nothing_back_from_the_device(uem_store, tmp_path):
    """Simulated, augmented, padded and UEM-masked batches, built and trained on: no readback, one copy each."""
    trainer = _trainer(uem_store, tmp_path / "run", "DATA_ON_DEVICE=true", "SIM_PROB=0.5", "SIM_MIN_SEGMENT_S=0.2",
                       "EPOCHS=3")
    assert isinstance(trainer.loader, resident.ResidentLoader) and trainer.cfg.augment.active
    batches, steps = [], 0
    for epoch in range(3):
        trainer.plan.set_epoch(epoch, 0)
        loader = iter(trainer.loader)
        while True:
            with RoundTrips() as trips:
                batch = next(loader, None)
                if batch is None:
                    break
                trainer._train_step(batch, steps, 1 << 30)
            if steps:  # the first step also builds the loss's constant permutation table (cached)
                assert trips.calls == {}, f"step {steps}: host round trips {dict(trips.calls)}"
            assert trips.transfers == 1, f"step {steps}: {trips.transfers} copies to the device"
            batches.append(batch)
            steps += 1
    # What the steps covered: simulated windows, padding, frames outside the UEM.
    assert any(b["padded"] for b in batches)
    assert any((b["weight"] == 1).all() and not b["mask"].all() and b["valid"].all() for b in batches)
    assert trainer.plan.simulate and steps >= 6


def test_the_attention_mask_is_the_padding_and_the_uem_only_decides_the_loss(uem_store, tmp_path):
    trainer = _trainer(uem_store, tmp_path / "run", "DATA_ON_DEVICE=true", "SIM_PROB=0", "AUG_WARP=0")
    windows = trainer.loader.windows
    full = windows.batch([(0, 0, 1)])  # base frames [0, 600) of an 800-frame recording with UEM [200, 600)
    assert not full["padded"] and full["valid"].all() and not full["mask"].all()
    short = windows.batch([(windows.host_lengths.index(400), 0, 1)])  # 400 frames of audio in a 600-frame window
    assert short["padded"] and short["valid"][0, :26].all() and not short["valid"][0, 27:].any()
    assert not short["mask"][0, 27:].any()


@pytest.mark.parametrize("data_on_device", ["true", "false"])
def test_fp16_with_a_grad_scaler_and_fused_adamw_resumes_exactly(toy, tmp_path, data_on_device):
    overrides = ("PRECISION=fp16", "LR=3e-3", f"DATA_ON_DEVICE={data_on_device}")
    whole = tmp_path / "whole"
    toy.train(whole, "EPOCHS=2", *overrides)
    toy.train(tmp_path / "split", "EPOCHS=2", "MAX_STEPS=4", *overrides)  # stops inside the second epoch
    toy.train(tmp_path / "split", "EPOCHS=2", *overrides, resume=True)
    a, b = (checkpoint.load_checkpoint(p / "last.pt") for p in (whole, tmp_path / "split"))
    assert a["scaler"]["scale"] == b["scaler"]["scale"] and a["scaler"]["_growth_tracker"] == b["scaler"]["_growth_tracker"]
    assert a["scaler"]["scale"] > 1.0  # the scaler was on: fp16 autocast with GradScaler("cpu")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["optimizer"]["param_groups"][0]["fused"] is True


def test_compile_smoke(toy, tmp_path):
    """COMPILE=true trains through torch.compile (inductor needs the C++ compiler this machine has)."""
    history = toy.train(tmp_path / "run", "EPOCHS=1", "COMPILE=true", "MAX_STEPS=2")
    assert history[-1]["step"] == 2 and np.isfinite(history[-1]["train_loss"])


def test_an_explicit_gpu_under_torchrun_is_refused(monkeypatch):
    with pytest.raises(AgencerdasError, match="names one GPU, but torchrun started 2 processes"):
        runtime._device("cuda:1", local_rank=0, world=2)


def test_the_memory_budget_counts_what_the_caching_allocator_holds_free(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (1000, 8000))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 3000)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 1000)
    assert resident.budget_bytes(torch.device("cuda", 0), 0.5) == 1500  # half of 1000 free + 2000 cached
    with pytest.raises(AgencerdasError, match="data_budget must be in"):
        resolve("optimized", ["DATA_BUDGET=1.0"])


def test_a_rank_restores_the_cuda_rng_state_of_its_own_device(monkeypatch):
    """Version 1 saved every visible GPU's state: a rank takes its own; version 2 saves one per rank."""
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state: restored.append(int(state[0])))
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: torch.tensor([7], dtype=torch.uint8))
    state = checkpoint.rng_state()
    assert int(state["cuda"][0]) == 7  # this process's device only
    checkpoint.set_rng_state({**state, "cuda": [torch.tensor([i], dtype=torch.uint8) for i in range(8)]})
    checkpoint.set_rng_state({**state, "cuda": [torch.tensor([0], dtype=torch.uint8)]})  # fewer GPUs than the run had
    checkpoint.set_rng_state(state)
    assert restored == [1, 7]
