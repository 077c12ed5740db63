"""Two CPU processes under torchrun (gloo): one epoch of DDP, identical replicas, a checkpoint one process resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agencerdas.training.checkpoint import load_checkpoint
from agencerdas.training.model import build_model

SCRIPT = Path(__file__).with_name("ddp_train.py")


def _torchrun(toy, out: Path, *arguments: str) -> list[dict]:
    """``ddp_train.py`` in two gloo processes; each rank's saved result."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(SCRIPT), toy.url, str(out), *toy.tiny, *arguments]
    # A session of its own, so a hung run is ended with both of its workers.
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
    assert proc.returncode == 0, output[-5000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_a_mid_epoch_resume_under_ddp_reports_the_uninterrupted_epoch_s_loss(toy, tmp_path):
    """Each rank keeps its own running sums in the checkpoint; the epoch's loss is over every rank's batches."""
    whole = _torchrun(toy, tmp_path / "whole", "EPOCHS=1", "DROPOUT=0")
    _torchrun(toy, tmp_path / "split", "EPOCHS=1", "DROPOUT=0", "MAX_STEPS=1")  # stops after each rank's first step
    split = _torchrun(toy, tmp_path / "split", "--resume", "EPOCHS=1", "DROPOUT=0")
    assert whole[0]["history"][0]["train_loss"] == pytest.approx(split[0]["history"][0]["train_loss"], rel=1e-6)


def test_two_processes_train_identical_replicas_and_the_checkpoint_resumes_in_one(toy, tmp_path):
    out = tmp_path / "run"
    ranks = _torchrun(toy, out, "EPOCHS=1")
    assert [r["world"] for r in ranks] == [2, 2]
    # DDP keeps the replicas identical: same initial weights, all-reduced gradients, same optimizer steps.
    for name, tensor in ranks[0]["model"].items():
        assert torch.equal(tensor, ranks[1]["model"][name]), name
    torch.manual_seed(0)
    identities = len(ranks[0]["model"]["speaker_table"])  # the embedding loss's table, one row per train identity
    initial = build_model(toy.config(), toy.view.feature_config["n_mels"], identities).state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in ranks[0]["model"].items()), "the model did not train"

    # 10 windows in 3 batches, padded to 4 and split 2 + 2: two optimizer steps on each rank.
    first, second = (r["history"][0] for r in ranks)
    assert first["step"] == second["step"] == 2
    assert "val_loss" in first and "val_loss" not in second  # only rank 0 validates, logs and writes
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1]

    ckpt = load_checkpoint(out / "last.pt")
    assert (ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"], ckpt["world"]) == (1, 0, 2, 2)
    assert ckpt["config"] == toy.config("EPOCHS=1").to_dict()
    for name, tensor in ckpt["model"].items():
        assert torch.equal(tensor, ranks[0]["model"][name]), name
    model = build_model(toy.config(), toy.view.feature_config["n_mels"], identities)
    model.load_state_dict(load_checkpoint(out / "best.pt")["model"])

    # One process carries on from the two-process checkpoint: 3 more steps for its 3 batches.
    resumed = toy.train(out, "EPOCHS=2", resume=True)
    assert [r["epoch"] for r in resumed] == [2] and resumed[0]["step"] == 5
    after = load_checkpoint(out / "last.pt")
    assert (after["epoch"], after["step"], after["world"]) == (2, 5, 1)
    assert any(not torch.equal(after["model"][k], v) for k, v in ckpt["model"].items())
