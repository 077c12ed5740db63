"""`agencerdas train` and `agencerdas.train` as a user meets them: overrides anywhere on the command line and
in any Python form, settings that leave much of the corpus out said loudly, a summary whose commands paste."""

from __future__ import annotations

import json
import shlex

import pytest

from agencerdas import train
from agencerdas.cli import main
from agencerdas.stores.errors import AgencerdasError
from tests.conftest import TINY


def test_overrides_after_options_are_overrides_and_a_narrow_max_speakers_is_warned_about(toy, tmp_path, capsys):
    """The toy recordings have 2 or 3 speakers: MAX_SPEAKERS=1 leaves much of each out of the loss."""
    out = tmp_path / "my run"
    assert main(["train", "--store", toy.url, "EPOCHS=1", "--out", str(out), *TINY, "--quiet", "MAX_SPEAKERS=1"]) == 0
    printed = capsys.readouterr()
    assert json.loads((out / "config.json").read_text())["max_speakers"] == 1
    warning = "warning: MAX_SPEAKERS=1 leaves "
    assert warning in printed.err and warning in printed.out and "raise MAX_SPEAKERS" in printed.out
    left_out = int(printed.out.split(warning)[1].split("%")[0])
    assert 20 <= left_out <= 80
    hint = printed.out.split("tensorboard --logdir ")[1].split("`")[0]
    assert shlex.split(hint) == [str(out)]


def test_unknown_arguments_after_the_overrides_are_still_usage_errors(toy, tmp_path, capsys):
    with pytest.raises(SystemExit) as error:
        main(["train", "--store", toy.url, "--out", str(tmp_path / "run"), *TINY, "--epochs", "3"])
    assert error.value.code == 2 and "unrecognized arguments: --epochs 3" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides", [
    "EPOCHS=1 MAX_STEPS=2 " + " ".join(TINY),
    {"EPOCHS": 1, "MAX_STEPS": 2, **dict(item.split("=") for item in TINY)},
    [("EPOCHS", 1), ("MAX_STEPS", 2), *TINY],
], ids=["string", "dict", "pairs"])
def test_train_takes_overrides_as_a_string_a_dict_or_pairs(toy, tmp_path, overrides):
    history = train(toy.url, out=tmp_path / "run", overrides=overrides, progress=False)
    assert history[-1]["step"] == 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["dim"] == 16


@pytest.mark.parametrize("kwargs, words", [
    ({"overrides": 3}, "train(overrides=...) must be KEY=VALUE strings"),
    ({"overrides": [("EPOCHS", 1, 2)]}, "neither a 'KEY=VALUE' string nor a (KEY, VALUE) pair"),
    ({"overrides": "EPOCHS='1"}, "train(overrides="),
    ({"overrides": ["EPOCHS", "1"]}, "override 'EPOCHS' has no value; give it as EPOCHS=VALUE"),
    ({"out": 3}, "train(out=...) must be a directory path"),
])
def test_train_names_the_argument_it_cannot_take(toy, tmp_path, kwargs, words):
    with pytest.raises(AgencerdasError) as error:
        train(toy.url, **{"out": tmp_path / "run", **kwargs}, progress=False)
    assert words in str(error.value)
    assert not (tmp_path / "run").exists()


def test_train_without_out_writes_the_presets_run_directory_as_the_cli_does(toy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train(toy.url, out=None, preset="ultra-fast", overrides=[*TINY, "EPOCHS=1", "MAX_STEPS=1"], progress=False)
    assert (tmp_path / "runs" / "ultra-fast" / "last.pt").is_file()
