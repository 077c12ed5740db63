"""A run directory has one owner: a second process is refused naming the holder, a holder killed with SIGKILL
blocks nothing, two runs started together never mix; a run that fails before its first checkpoint leaves no
run behind; a run never replaces its own INIT_FROM; a new run removes the old run's TensorBoard events."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import torch

from agencerdas.stores.errors import AgencerdasError
from agencerdas.training import objective
from agencerdas.training.checkpoint import load_checkpoint
from agencerdas.training.rundir import LOCK_NAME, RUN_FILES, RunLock, run_state
from tests.conftest import TINY
from tests.reliability.helpers import assert_no_traceback, cli, cli_popen


def _wait_for(condition, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _children(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def test_a_second_lock_on_a_run_directory_names_its_holder_until_it_is_released(tmp_path):
    first, second = RunLock(tmp_path / "run"), RunLock(tmp_path / "run")
    first.acquire(run_state(tmp_path / "run"))
    with pytest.raises(AgencerdasError, match=f"in use by another training run \\(pid {os.getpid()} on host "
                                              f"{socket.gethostname()}, started "):
        second.acquire({})
    first.release()
    second.acquire({})
    second.release()


def test_a_run_written_while_this_one_was_starting_is_not_replaced(tmp_path):
    out = tmp_path / "run"
    seen = run_state(out)  # empty, as the caller found it
    out.mkdir()
    (out / "config.json").write_text("{}")  # another process's run, started and saved meanwhile
    with pytest.raises(AgencerdasError, match="changed while this run was starting \\(config.json"):
        RunLock(out).acquire(seen)
    RunLock(out).acquire(run_state(out))  # the lock was released


def test_a_running_train_owns_its_directory_and_a_killed_one_blocks_nothing(toy, tmp_path):
    out = tmp_path / "run"
    base = ["train", "--store", toy.url, "--out", str(out), *TINY, "--quiet"]
    # DataLoader workers: forked with a copy of the lock's descriptor, they outlive a killed parent by seconds
    holder = cli_popen(*base, "EPOCHS=100000", "DATA_ON_DEVICE=false", "NUM_WORKERS=2")
    try:
        _wait_for(lambda: (out / "last.pt").exists() and str(holder.pid) in (out / LOCK_NAME).read_text())
        for mode in ("--overwrite", "--resume"):
            refused = cli(*base, mode, "EPOCHS=100000", timeout=180)
            assert refused.returncode == 2, refused.stderr
            assert f"is in use by another training run (pid {holder.pid} on host" in refused.stderr
            assert_no_traceback(refused.stdout, refused.stderr)
        _wait_for(lambda: _children(holder.pid))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)  # not communicate(): the workers hold its pipes until they notice and exit
    RunLock(out).check_free()  # at once, while the orphaned workers may still run
    step = load_checkpoint(out / "last.pt")["step"]
    resumed = cli(*base, "--resume", f"EPOCHS={load_checkpoint(out / 'last.pt')['epoch'] + 1}", timeout=180)
    assert resumed.returncode == 0, resumed.stderr  # the dead holder's lock went with it
    holder.communicate(timeout=60)
    assert load_checkpoint(out / "last.pt")["step"] > step


def test_two_runs_started_together_into_one_new_directory_never_mix(toy, tmp_path):
    out = tmp_path / "run"
    runs = [cli_popen("train", "--store", toy.url, *TINY, "--out", str(out), "--quiet", f"EPOCHS={epochs}")
            for epochs in (3, 4)]  # overrides after an option too
    results = [(run.returncode, *output) for run, output in zip(runs, [run.communicate(timeout=300) for run in runs])]
    assert sorted(status for status, _, _ in results) == [0, 2], results
    refused = next(err for status, _, err in results if status == 2)
    assert "in use by another training run" in refused or "changed while this run was starting" in refused
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == load_checkpoint(out / "last.pt")["config"]["epochs"] == \
        load_checkpoint(out / "best.pt")["config"]["epochs"]
    epochs = [r["epoch"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    assert epochs == list(range(1, config["epochs"] + 1))


def test_a_new_run_that_fails_before_its_first_checkpoint_leaves_no_run(toy, tmp_path, monkeypatch):
    def failing(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(objective, "pit_bce", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        toy.train(tmp_path / "run", "EPOCHS=1")
    assert not [name for name in RUN_FILES if (tmp_path / "run" / name).exists()]
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))


def test_a_training_loss_that_is_not_finite_stops_the_run(toy, tmp_path, monkeypatch):
    """inf added as a constant: the loss is infinite while every gradient stays finite (as EMBED_MARGIN=1e38 did)."""
    real = objective.pit_bce

    def infinite(*args, **kwargs):
        result = real(*args, **kwargs)
        return result._replace(loss=result.loss + torch.tensor(float("inf")))

    monkeypatch.setattr(objective, "pit_bce", infinite)
    with pytest.raises(AgencerdasError, match="training diverged at step .*the training loss became NaN or inf"):
        toy.train(tmp_path / "run", "EPOCHS=1")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_init_from_inside_the_run_it_would_replace_is_refused(toy, tmp_path):
    out = tmp_path / "run"
    toy.train(out, "EPOCHS=1")
    before = (out / "best.pt").read_bytes()
    with pytest.raises(AgencerdasError, match="lies inside --out .*copy the checkpoint out of it first"):
        toy.train(out, "EPOCHS=1", f"INIT_FROM={out / 'best.pt'}")
    assert (out / "best.pt").read_bytes() == before


def test_resume_refuses_an_init_from_it_would_not_read(toy, tmp_path):
    toy.train(tmp_path / "source", "EPOCHS=1")
    toy.train(tmp_path / "run", "EPOCHS=1")
    with pytest.raises(AgencerdasError, match="never reads INIT_FROM.*started from random weights"):
        toy.train(tmp_path / "run", "EPOCHS=2", f"INIT_FROM={tmp_path / 'source' / 'best.pt'}", resume=True)


def test_a_new_run_in_a_relative_directory_removes_the_old_run_s_events(toy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    toy.train(Path("run"), "EPOCHS=1")
    old = set(Path("run").glob("events.out.tfevents.*"))
    toy.train(Path("run"), "EPOCHS=1")  # as --overwrite does
    assert old and not old & set(Path("run").glob("events.out.tfevents.*"))
