"""`agencerdas evaluate --tune`: the chosen post-processing is saved with the run, bound to the checkpoint
it was tuned with, and used afterwards; it is never tuned on the scored recordings unless asked."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from agencerdas.cli import main
from agencerdas.inference.evaluate import EvalRequest, evaluate
from agencerdas.scoring.tuning import MEDIANS, THRESHOLDS
from agencerdas.inference.model import load_model
from agencerdas.stores import hash_file
from agencerdas.stores.errors import AgencerdasError
from agencerdas.pipeline.runner import FeaturesRequest, build_features
from tests.builders import make_corpus


@pytest.fixture(scope="module")
def trained(toy, tmp_path_factory) -> Path:
    """A checkpoint trained once on the toy store; tests copy it into their own run directory."""
    run = tmp_path_factory.mktemp("evaluate-run")
    toy.train(run, "EPOCHS=2", "FILL_SPEECH=false")
    return run / "best.pt"


@pytest.fixture
def model(trained, tmp_path) -> Path:
    """This test's run directory holding the checkpoint and no tuned.json yet."""
    (tmp_path / "run").mkdir()
    return Path(shutil.copy(trained, tmp_path / "run" / "best.pt"))


def test_tune_saves_its_choice_with_the_run_and_later_inference_uses_it(toy, model):
    run = model.parent
    # Scoring the train split, so tuning on the validation split is not tuning on the scored recordings.
    report = evaluate(EvalRequest(model=model, store=toy.url, split="train", tune=True, timelines=0, device="cpu"))
    tuned = json.loads((run / "tuned.json").read_text())
    assert tuned["threshold"] in THRESHOLDS and tuned["median_frames"] in MEDIANS
    assert tuned["fill_speech"] is False  # tuned with the run's own decision rule, and recorded with it
    assert report["tuned"] == tuned
    (validation,) = toy.view.split("validation")
    assert (tuned["checkpoint"], tuned["checkpoint_xxh3"], tuned["tuned_on_scored"]) == (
        "best.pt", hash_file(model), False)
    assert tuned["data"] == {"view": "default", "split": "validation", "audio_dir": None, "recordings": 1,
                             "features": [toy.view.recordings[validation].features]}
    assert report["tuned_on"] == {"view": "default", "split": "validation", "audio_dir": None, "recordings": 1,
                                  "scored_recordings_tuned_on": 0, "optimistic": False}
    assert report["optimistic"] is False and report["split"] == "train"
    assert "tuned on the validation split of view 'default' (1 recording)" in report["table"]
    assert "OPTIMISTIC" not in report["table"]
    assert {k: report["inference"][k] for k in ("threshold", "median_frames", "fill_speech")} == {
        k: tuned[k] for k in ("threshold", "median_frames", "fill_speech")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checkpoint it was tuned with: applied, and no warning
        loaded = load_model(model, torch.device("cpu"))  # what diarize and --pseudo-model use
    inference = loaded.inference
    assert (inference.threshold, inference.median_frames, inference.fill_speech) == (
        tuned["threshold"], tuned["median_frames"], False)
    assert loaded.tuned == tuned


def test_tuned_settings_of_another_checkpoint_are_ignored_with_a_warning(model):
    configured = load_model(model, torch.device("cpu")).inference
    tuned = {"threshold": 0.9, "median_frames": 21, "fill_speech": True, "der": 0.1}
    other = {**tuned, "checkpoint": "best.pt", "checkpoint_xxh3": "0" * 32, "tuned_on_scored": False,
             "data": {"view": "default", "split": "validation", "audio_dir": None, "recordings": 1, "features": []}}
    # Tuned with another file of the same name (an older best.pt), and a tuned.json from before the binding.
    for written in (other, {**tuned, "view": "default", "split": "validation"}):
        (model.parent / "tuned.json").write_text(json.dumps(written))
        with pytest.warns(UserWarning, match=rf"{re.escape(str(model.parent / 'tuned.json'))} .*"
                                             rf"{re.escape(str(model))}.*: ignoring it .* rerun `agencerdas evaluate "
                                             rf"--model {re.escape(str(model))} --tune` for this checkpoint"):
            loaded = load_model(model, torch.device("cpu"))
        assert loaded.inference == configured and loaded.tuned is None

    bound = {**other, **configured.tuned_record(), "threshold": 0.9, "median_frames": 21, "cluster_threshold": 0.45,
             "checkpoint_xxh3": hash_file(model)}
    (model.parent / "tuned.json").write_text(json.dumps(bound))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_model(model, torch.device("cpu"))
    assert (loaded.inference.threshold, loaded.inference.median_frames) == (0.9, 21)
    assert loaded.inference.clustering and loaded.inference.cluster_threshold == 0.45
    # Tuned for another pipeline (clustering here, stitching asked; or written before tuned.json recorded the
    # chunks): its values would not fit, and are refused by name.
    for asked, written, differs in (({"clustering": "off"}, bound, "clustering: tuned True, here False"),
                                    ({}, {k: v for k, v in bound.items() if k != "window"}, "window: tuned None"),
                                    ({}, {**bound, "fill_speech": not configured.fill_speech}, "fill_speech: tuned")):
        (model.parent / "tuned.json").write_text(json.dumps(written))
        with pytest.warns(UserWarning, match=rf"tuned for another pipeline \(.*{re.escape(differs)}.*\): not applied"):
            loaded = load_model(model, torch.device("cpu"), **asked)
        assert loaded.tuned is None and loaded.inference.threshold == configured.threshold


def test_tuning_on_the_scored_recordings_is_refused_unless_asked_and_then_flagged(toy, model):
    request = dict(model=model, store=toy.url, timelines=0, device="cpu")
    for split in ("validation", "all"):  # the validation split is all or part of what is scored
        with pytest.raises(AgencerdasError, match=r"(?s)tune on the validation split of view 'default'.*"
                                                  r"--tune --audio-dir.*--tune-on-scored"):
            evaluate(EvalRequest(**request, split=split, tune=True))
    with pytest.raises(AgencerdasError, match="add --tune"):
        evaluate(EvalRequest(**request, tune_on_scored=True))
    assert not (model.parent / "tuned.json").exists()

    report = evaluate(EvalRequest(**request, split="validation", tune=True, tune_on_scored=True))
    assert report["tuned"]["tuned_on_scored"] is True and report["tuned"]["data"]["split"] == "validation"
    assert report["optimistic"] is True
    assert report["tuned_on"]["scored_recordings_tuned_on"] == 1
    assert "OPTIMISTIC DER: the thresholds were tuned on 1 of the 1 scored recordings" in report["table"]
    assert json.loads((model.parent / "eval" / "report.json").read_text())["optimistic"] is True

    # Applied later from tuned.json to the same recordings, the DER is still optimistic and says so.
    later = evaluate(EvalRequest(**request, split="validation"))
    assert later["tuned"] is None and later["optimistic"] is True
    assert later["inference"]["threshold"] == report["tuned"]["threshold"]


@pytest.mark.parametrize("chunks", [{}, {"chunk_s": 6.0, "chunk_hop_s": 2.0},
                                    {"chunk_s": 6.0, "chunk_hop_s": 2.0, "embeddings": "ge2e", "vad": "silero"}])
def test_evaluate_on_the_tuning_data_with_the_tuned_settings_reproduces_the_tuned_der(toy, model, chunks):
    request = dict(model=model, store=toy.url, timelines=0, device="cpu", split="train", **chunks)
    tuning = evaluate(EvalRequest(**request, tune=True, tune_on_scored=True))
    tuned = json.loads((model.parent / "tuned.json").read_text())
    assert tuned["clustering"] is True  # the toy model has the embedding head: tuned with clustering
    assert tuning["der"]["overall"]["der"] == pytest.approx(tuned["der"], abs=1e-9)
    assert (tuned["embeddings"], tuned["vad"]) == (chunks.get("embeddings", "head"), chunks.get("vad", "none"))
    later = evaluate(EvalRequest(**request))  # applied from tuned.json alone
    assert later["der"]["overall"]["der"] == pytest.approx(tuned["der"], abs=1e-9)
    assert {k: later["inference"][k] for k in ("threshold", "median_frames", "cluster_threshold", "window")} == {
        k: tuned[k] for k in ("threshold", "median_frames", "cluster_threshold", "window")}
    # the same checkpoint under other chunks: the tuned values are refused, not applied
    other = {"chunk_s": 4.0, "chunk_hop_s": 2.0} if chunks else {"chunk_s": 6.0, "chunk_hop_s": 2.0}
    with pytest.warns(UserWarning, match=r"tuned for another pipeline \(window: tuned"):
        refused = load_model(model, torch.device("cpu"), **other)
    assert refused.tuned is None


def _store_copy(toy, tmp_path) -> str:
    """The toy store is shared read-only; evaluating an audio directory writes features and a view."""
    return str(shutil.copytree(toy.url, tmp_path / "store"))


def test_tune_with_an_audio_dir_tunes_on_validation_and_scores_the_test_set(toy, model, tmp_path, capsys):
    store = _store_copy(toy, tmp_path)
    audio, rttm = make_corpus(tmp_path / "test", n=2, seconds=8.0, formats=("wav",), rates=(16000,))
    assert main(["evaluate", "--model", str(model), "--store", store, "--audio-dir", str(audio),
                 "--rttm-dir", str(rttm), "--tune", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "tuned on the validation split of view 'default' (1 recording)" in printed and "OPTIMISTIC" not in printed
    report = json.loads((model.parent / "eval" / "report.json").read_text())
    assert report["split"] == "all" and sorted(report["der"]["per_recording"]) == ["rec00", "rec01"]
    assert report["tuned"]["data"]["split"] == "validation" and report["optimistic"] is False


def test_a_number_of_speakers_the_recordings_cannot_give_is_in_the_report_and_the_table(toy, model, capsys):
    # issue 29: 50 speakers cannot come from one short recording's few chunk slots; said, not silent
    assert main(["evaluate", "--model", str(model), "--store", toy.url, "--num-speakers", "50", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "speakers asked for (--num/--min/--max-speakers) not given on 1 of 1 recording(s)" in printed
    unmet = json.loads((model.parent / "eval" / "report.json").read_text())["speaker_count_unmet"]
    assert list(unmet) == toy.view.split("validation")
    assert next(iter(unmet.values())).startswith("asked for exactly 50 speaker(s), found ")


def test_tune_refuses_an_audio_dir_holding_the_recordings_it_tunes_on(toy, model, tmp_path):
    store = _store_copy(toy, tmp_path)
    (validation,) = toy.view.split("validation")
    source = Path(toy.view.recordings[validation].source)  # the toy corpus's audio/ and rttm/
    audio, rttm = tmp_path / "test" / "audio", tmp_path / "test" / "rttm"
    audio.mkdir(parents=True)
    rttm.mkdir()
    shutil.copy(source, audio)
    shutil.copy(source.parent.parent / "rttm" / f"{validation}.rttm", rttm)
    with pytest.raises(AgencerdasError, match="1 of the 1 recordings scored here are among them"):
        evaluate(EvalRequest(model=model, store=store, audio_dir=audio, rttm_dir=rttm, tune=True, timelines=0,
                             device="cpu"))


def test_evaluating_an_audio_dir_never_replaces_a_training_view(toy, model, tmp_path):
    store = _store_copy(toy, tmp_path)
    audio, rttm = make_corpus(tmp_path / "test", n=1, seconds=8.0, formats=("wav",), rates=(16000,))
    view_file = Path(store) / "views" / "default.json"
    before = view_file.read_bytes()
    request = dict(model=model, store=store, audio_dir=audio, rttm_dir=rttm, timelines=0, device="cpu")
    with pytest.raises(AgencerdasError, match="view 'default' .* never replaces it; give another view name"):
        evaluate(EvalRequest(view="default", **request))
    assert view_file.read_bytes() == before
    evaluate(EvalRequest(**request))  # its own view, "test" ...
    evaluate(EvalRequest(**request))  # ... which a later evaluation may replace
    with pytest.raises(AgencerdasError, match="view 'test' .* was written by `agencerdas evaluate --audio-dir`"):
        build_features(FeaturesRequest(audio, store, rttm_dir=rttm, view="test", progress=False))


def test_outputs_named_after_a_long_recording_id_fit_the_file_system_and_the_report_comes_first(model, tmp_path):
    """A 245-character id: its RTTM and timeline names keep to 255 bytes, and report.json is written."""
    audio, rttm = make_corpus(tmp_path / "test", n=1, seconds=8.0, formats=("wav",), rates=(16000,))
    long_id = "a" * 245
    (audio / "rec00.wav").rename(audio / f"{long_id}.wav")
    (rttm / f"{long_id}.rttm").write_text((rttm / "rec00.rttm").read_text().replace("rec00", long_id))
    (rttm / "rec00.rttm").unlink()
    report = evaluate(EvalRequest(model=model, store=str(tmp_path / "store"), audio_dir=audio, rttm_dir=rttm,
                                  device="cpu", out=tmp_path / "eval"))
    assert list(report["der"]["per_recording"]) == [long_id]
    written = [p.name for p in (tmp_path / "eval").rglob("*")]
    assert "report.json" in written and any(n.startswith("timeline_") for n in written)
    assert all(len(name.encode()) <= 255 for name in written)


def test_every_file_name_derived_from_an_id_fits_255_bytes_and_stays_distinct():
    from agencerdas.pipeline.rttm import unique_file_names

    ids = ["x" * 300, "x" * 300 + "y", "a b", "a_b", "é" * 200]
    for prefix, suffix in (("", ".rttm"), ("timeline_", ".png")):
        names = unique_file_names(ids, suffix, prefix)
        assert len(set(names)) == len(ids)
        assert all(len(n.encode()) <= 255 and n.startswith(prefix) and n.endswith(suffix) for n in names)
