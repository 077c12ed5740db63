"""Hostile names and values: recording ids, speakers and config values are data, never paths or shell
text; and files written by a newer agencerdas (store, view, checkpoint) are refused clearly."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import soundfile as sf

from agencerdas.pipeline import FeaturesRequest, build_features
from agencerdas.pipeline.rttm import Segment, file_safe, format_rttm, rttm_safe, write_rttm
from agencerdas.stores import Store, load_view
from agencerdas.stores.errors import AgencerdasError
from tests.builders import make_corpus, render
from tests.reliability.helpers import AGENCERDAS, ROOT, assert_no_traceback, assert_valid_rttm, cli_env
from agencerdas.cli import main

SHELL = "$(touch PWNED) `touch PWNED2`"
NEWLINE = "line\nbreak\ttab"
SPEAKERS = ["$(rm${IFS}-rf${IFS}~)", "`touch${IFS}PWNED3`", "../../etc/passwd", ";ls;"]
TINY = ["DIM=16", "BLOCKS=1", "HEADS=2", "WINDOW=40", "NUM_WORKERS=0", "DER_EVERY=0", "DEVICE=cpu"]


def _no_pwned(*roots: Path) -> None:
    """No file a shell would have created: under the test's directories, and in the repository root."""
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            assert not any(n.startswith("PWNED") for n in filenames + dirnames), dirpath
    assert not any(n.startswith("PWNED") for n in os.listdir(ROOT))


def _store_layout_is_keys_only(path: Path) -> None:
    """Nothing under the store is named after a recording, speaker or path from an input."""
    for dirpath, dirnames, filenames in os.walk(path):
        rel = Path(dirpath).relative_to(path).parts
        if len(rel) == 1 and rel[0] in ("features", "labels"):
            assert all(len(d) == 32 and all(c in "0123456789abcdef" for c in d) for d in dirnames), dirnames
        if rel == ("views",):
            assert filenames == ["default.json"]
        if not rel:
            assert set(dirnames) <= {"features", "labels", "views", "_tmp"} and filenames == ["store.json"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    audio, rttm = root / "audio", root / "rttm"
    (audio / "sub").mkdir(parents=True)
    rttm.mkdir()
    turns = [Segment(0.2 + 0.5 * i, 0.4, speaker) for i, speaker in enumerate(SPEAKERS)]
    names = {"..x": audio / "sub" / "..x.wav", SHELL: audio / f"{SHELL}.wav", NEWLINE: audio / f"{NEWLINE}.wav",
             "-rf ~": audio / "-rf ~.wav"}
    for i, (rec, path) in enumerate(names.items()):
        sf.write(path, render([], 2.5, 16000, i), 16000)
        write_rttm(rttm / f"{file_safe(rec)}.rttm", rec, turns)
    (rttm / "evil_ids.rttm").write_text(
        "SPEAKER ../../x 1 0.0 1.0 <NA> <NA> alice <NA> <NA>\nSPEAKER sub/..x 1 0.0 1.0 <NA> <NA> bob <NA> <NA>\n")
    return root, audio, rttm, names


def test_hostile_recording_ids_and_speakers_are_stored_and_reported_as_data(hostile, tmp_path, monkeypatch):
    root, audio, rttm, names = hostile
    monkeypatch.chdir(tmp_path)  # where a `touch PWNED` run by a shell would land
    store_path = tmp_path / "store"
    summary = build_features(FeaturesRequest(audio, str(store_path), rttm_dir=rttm, progress=False))
    reasons = [reason for _, reason in summary.failures]
    assert len(reasons) == 2 and all(Path(p).name == "evil_ids.rttm" for p, _ in summary.failures), summary.failures
    assert any("'../../x'" in r for r in reasons) and any("'sub/..x'" in r for r in reasons)
    report = summary.format()
    for rec, path in names.items():
        assert str(path) not in report  # good recordings are not listed as failures ...
    store = Store(store_path, create=False)
    view = load_view(store, "default")
    assert sorted(view.recordings) == sorted(names)  # ... and are stored under their literal names
    for rec, entry in view.recordings.items():
        assert entry.speakers == SPEAKERS and entry.source == str(names[rec])
        assert store.attrs("features", entry.features)["recording_id"] == rec
        assert store.attrs("labels", entry.labels)["speakers"] == SPEAKERS
        rows = assert_valid_rttm(format_rttm(rec, [Segment(0.1 + i, 0.5, s) for i, s in enumerate(SPEAKERS)]))
        assert {r[1] for r in rows} == {rttm_safe(rec)} and [r[7] for r in rows] == [rttm_safe(s) for s in SPEAKERS]
        target = (tmp_path / "out" / f"{file_safe(rec)}.rttm").resolve()
        assert target.parent == (tmp_path / "out").resolve() and not target.name.startswith(".")
    assert store.verify().ok
    _store_layout_is_keys_only(store_path)
    _no_pwned(tmp_path, root)


def test_a_file_name_that_is_not_utf8_is_a_named_user_error_and_the_others_are_built(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    bad = os.fsencode(audio) + b"/rec\xff.wav"  # Latin-1 "recÿ": valid on Linux, not UTF-8
    sf.write(bad, render([], 2.0, 16000, 0), 16000)
    sf.write(audio / "good.wav", render([], 2.0, 16000, 1), 16000)
    # An annotation's file name carries no meaning: one that is not UTF-8 is still read.
    write_rttm(os.fsdecode(os.fsencode(audio) + b"/notes\xe9.rttm"), "good", [Segment(0.2, 1.0, "alice")])
    store = tmp_path / "store"
    # Strict UTF-8 stdout, as under en_US.UTF-8 (C.UTF-8 would let surrogates through): the report must print.
    run = subprocess.run([*AGENCERDAS, "features", str(audio), "--store", str(store), "--quiet"], cwd=ROOT,
                         env=cli_env(PYTHONIOENCODING="utf-8"), capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert_no_traceback(run.stdout, run.stderr)
    (line,) = [line for line in run.stdout.splitlines() if "not valid UTF-8" in line]
    assert f"{audio}/rec\\xff.wav" in line and "rename" in line
    assert "failed 1" in run.stdout and "good.wav" not in run.stdout
    view = load_view(Store(store, create=False), "default")
    assert list(view.recordings) == ["good"] and view.recordings["good"].speakers == ["alice"]
    assert Store(store, create=False).verify().ok

    from agencerdas.pipeline.features import FeatureConfig
    from agencerdas.pipeline.tasks import ensure_features

    with pytest.raises(AgencerdasError, match=r"rec\\xff\.wav: the file name is not valid UTF-8"):
        ensure_features(Store(tmp_path / "diarize-store"), Path(os.fsdecode(bad)), FeatureConfig())


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A one-step model: enough to run diarize end to end (quality is not the point)."""
    from agencerdas.training.config import resolve
    from agencerdas.training.loop import train

    root = tmp_path_factory.mktemp("model")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AGENCERDAS_CACHE_DIR", str(root / "cache"))
        audio, rttm = make_corpus(root / "corpus", n=3, seconds=6.0, formats=("wav",), rates=(16000,))
        assert build_features(FeaturesRequest(audio, str(root / "store"), rttm_dir=rttm, progress=False)).ok
        train(resolve("optimized", [*TINY, "MAX_STEPS=1", "EPOCHS=1"]), str(root / "store"), "default", root / "run",
              progress=False)
    return root


def test_diarize_writes_valid_rttm_inside_out_for_hostile_file_names(hostile, tiny_model, tmp_path, monkeypatch,
                                                                      capsys):
    root, audio, rttm, names = hostile
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    files = [str(p) for p in names.values()]
    rc = main(["diarize", *files, "--model", str(tiny_model / "run" / "best.pt"), "--out", str(out), "--store",
               str(tmp_path / "store"), "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    assert_no_traceback(captured.out, captured.err)
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"{file_safe(rec)}.rttm" for rec in names)
    for rec in names:
        rows = assert_valid_rttm((out / f"{file_safe(rec)}.rttm").read_text(encoding="utf-8"))
        assert {r[1] for r in rows} <= {rttm_safe(rec)}
    _no_pwned(tmp_path, root)


def test_hostile_view_names_and_config_values_are_refused_cleanly(hostile, tmp_path, capsys):
    root, audio, rttm, _ = hostile
    store = tmp_path / "store"
    for view in ("../../escape", ".hidden", "a/b"):
        assert main(["features", str(audio), "--store", str(store), "--quiet", "--view", view]) == 2
        assert "not a plain file name" in capsys.readouterr().err
    assert not (tmp_path / "escape.json").exists() and not (root / "escape.json").exists()
    assert main(["train", "--store", str(store), "--out", str(tmp_path / "run"), "DEVICE=$(touch PWNED)"]) == 2
    err = capsys.readouterr().err
    assert "unknown device" in err or "no view" in err or "no agencerdas store" in err, err
    assert main(["train", "--store", str(store), "--preset", "$(touch PWNED)", "--out", str(tmp_path / "r")]) == 2
    assert "unknown preset" in capsys.readouterr().err
    _no_pwned(tmp_path)


# ------------------------------------------------------------------------ newer format versions


def _bump(path: Path, field: str = "version") -> None:
    payload = json.loads(path.read_text())
    payload[field] = payload.get(field, 1) + 1
    path.write_text(json.dumps(payload))


def test_store_view_and_checkpoint_of_a_newer_version_are_refused_with_a_clear_message(tiny_model, tmp_path, capsys):
    import shutil

    import torch

    from agencerdas.training.checkpoint import load_checkpoint

    store = tmp_path / "store"
    shutil.copytree(tiny_model / "store", store)
    run = tmp_path / "run"
    shutil.copytree(tiny_model / "run", run)
    train = ["train", "--store", str(store), "--view", "default", "--out", str(run), "--quiet", *TINY, "EPOCHS=2"]

    # a checkpoint from the future: resume, diarize and evaluate refuse it
    ckpt = torch.load(run / "last.pt", weights_only=False)
    torch.save({**ckpt, "version": ckpt["version"] + 1}, run / "last.pt")
    with pytest.raises(Exception, match="newer than this agencerdas supports"):
        load_checkpoint(run / "last.pt")
    assert main([*train, "--resume"]) == 2
    assert "newer than this agencerdas supports" in capsys.readouterr().err
    wav = next((tiny_model / "corpus" / "audio").iterdir())
    assert main(["diarize", str(wav), "--model", str(run / "last.pt"), "--out", str(tmp_path / "d")]) == 2
    assert "upgrade agencerdas" in capsys.readouterr().err

    # a view from the future
    _bump(store / "views" / "default.json")
    assert main([*train, "--overwrite"]) == 2  # a new run in the old one's place, asked for
    err = capsys.readouterr().err
    assert "newer than this agencerdas" in err and "upgrade" in err
    # a damaged view is a clear error too, not a traceback
    (store / "views" / "default.json").write_text('{"name": "default", "recor')
    assert main([*train, "--overwrite"]) == 2  # a new run in the old one's place, asked for
    err = capsys.readouterr().err
    assert "damaged" in err and "Traceback" not in err

    # a store from the future: every command that opens it refuses
    from agencerdas.stores.store import STORE_VERSION

    marker = json.loads((store / "store.json").read_text())
    (store / "store.json").write_text(json.dumps({**marker, "version": STORE_VERSION + 1}))
    for argv in (["store", "verify", "--store", str(store)], ["store", "gc", "--store", str(store)], [*train, "--overwrite"],
                 ["features", str(tiny_model / "corpus" / "audio"), "--store", str(store), "--quiet"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "newer than this agencerdas understands" in err and "upgrade agencerdas" in err, err
    assert_no_traceback(err)
