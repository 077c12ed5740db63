"""Runs saved by every earlier version resume, or say why: the last.pt each version wrote with its own code
(fixtures/old-runs/COMMIT.pt, by fixtures/make_old_runs.py) against today's trainer."""

from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from agencerdas.inference.model import load_model
from agencerdas.stores.errors import AgencerdasError
from agencerdas.training import config as config_module
from agencerdas.training.checkpoint import load_checkpoint
from agencerdas.training.config import ADDED_FIELDS, RESUMABLE_CHANGES, TrainConfig
from agencerdas.training.loop import train
from agencerdas.training.model import build_model

OLD_RUNS = {path.stem: path for path in sorted((Path(__file__).parent / "fixtures" / "old-runs").glob("*.pt"))}
FIRST = "6147637"  # the first release
TODAY = {f.name for f in dataclasses.fields(TrainConfig)}


def _old_run(commit: str, out: Path) -> Path:
    """A run directory holding ``commit``'s checkpoint as last.pt and best.pt (after one epoch they are one)."""
    out.mkdir()
    for name in ("last.pt", "best.pt"):
        shutil.copy(OLD_RUNS[commit], out / name)
    return out


def _resume(toy, run: Path, *overrides: str) -> list[dict]:
    """Resume on the toy store: the corpus the old runs trained on, but a store built by today's pipeline, whose
    view fingerprint older versions computed otherwise (on their own store a run resumes without the flag)."""
    return train(toy.config("EPOCHS=2", *overrides), toy.url, "default", run, resume=True, progress=False,
                 allow_view_change=True)


def test_the_table_names_every_field_added_since_the_first_release():
    assert set(OLD_RUNS) >= {FIRST, "e04291d"}  # the first release, and the last version before today's fields
    assert set(ADDED_FIELDS) == TODAY - set(load_checkpoint(OLD_RUNS[FIRST])["config"])
    for path in OLD_RUNS.values():  # and each version saved every field it had
        assert set(load_checkpoint(path)["config"]) | set(ADDED_FIELDS) == TODAY


@pytest.mark.parametrize("commit", sorted(OLD_RUNS))
def test_a_run_saved_by_an_earlier_version_resumes_as_its_error_says(toy, tmp_path, commit):
    """Resumed with other settings (today's defaults, the tests' TINY model), the run is refused with the settings
    it was trained with; given those, it resumes (no KeyError, whatever the version lacked), and its best.pt
    loads for inference as a model of the shape it holds."""
    run = _old_run(commit, tmp_path / "run")
    best = load_checkpoint(run / "best.pt")
    cfg = TrainConfig.from_dict(best["config"])
    build_model(cfg, best["feature_config"]["n_mels"]).load_state_dict(best["model"])  # strict
    lacking = set(ADDED_FIELDS) - set(best["config"]) - RESUMABLE_CHANGES  # taken from the table
    assert {k: getattr(cfg, k) for k in lacking} == {k: ADDED_FIELDS[k] for k in lacking}

    with pytest.raises(AgencerdasError, match="cannot resume with changed settings") as error:
        _resume(toy, run)
    said = re.search(r"resume it with (.*?) \(the settings it was trained with\)", str(error.value))
    assert said, error.value
    step = load_checkpoint(run / "last.pt")["step"]
    assert [r["epoch"] for r in _resume(toy, run, *shlex.split(said.group(1)))] == [2]
    assert load_checkpoint(run / "last.pt")["step"] > step
    # and it evaluates as before: its slots keep the head's embeddings (or stitching), never a pretrained encoder
    as_saved = _old_run(commit, tmp_path / "as-saved") / "best.pt"
    assert load_model(as_saved, torch.device("cpu")).inference.embeddings == "head"


def test_a_field_without_a_row_in_the_table_is_named_not_a_key_error(toy, tmp_path, monkeypatch):
    run = _old_run(FIRST, tmp_path / "run")
    monkeypatch.setattr(config_module, "ADDED_FIELDS", {k: v for k, v in ADDED_FIELDS.items() if k != "chunk_hop_s"})
    monkeypatch.setattr("agencerdas.training.resume.ADDED_FIELDS", config_module.ADDED_FIELDS)
    with pytest.raises(AgencerdasError, match="saved before the setting.s. chunk_hop_s existed"):
        _resume(toy, run)
