"""The pipeline that needs no trained model (Silero VAD -> windows -> GE2E -> clustering), end to end on a tiny
simulated corpus: ``evaluate --pretrained``, ``diarize --pretrained``, ``Diarizer.pretrained()`` and
``features --pseudo-model pretrained`` give the same turns, and the turns find the conversation's speakers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agencerdas.inference.api import Diarizer
from agencerdas.cli import main
from agencerdas.inference.pseudo_model import PRETRAINED_METHOD
from agencerdas.pipeline.rttm import parse_rttm
from agencerdas.pipeline.simulate import SimulationConfig, simulate_corpus
from agencerdas.stores import Store, load_view


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Two eSpeak conversations of two unseen voices, 20-25 s each (audio/, rttm/)."""
    root = tmp_path_factory.mktemp("pretrained-corpus")
    simulate_corpus(root, SimulationConfig(n_recordings=2, pool="test", speakers_per_rec={2: 1.0}, min_duration_s=20.0,
                                           max_duration_s=25.0, seed=3), progress=False)
    return root


def _turns(rttm: Path) -> dict[str, list]:
    return {uri: turns for uri, turns in parse_rttm(rttm).items()}


def test_evaluate_pretrained_scores_a_labelled_corpus_and_finds_its_speakers(corpus, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--pretrained", "--audio-dir", str(corpus / "audio"), "--rttm-dir", str(corpus / "rttm"),
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["pipeline"] == "pretrained" and report["inference"]["vad"] == "silero"
    # Two clearly different eSpeak voices taking turns: far better than one speaker everywhere (DER ~ 0.5).
    assert report["der"]["overall"]["der"] < 0.35, report["der"]["overall"]
    for audio in sorted((corpus / "audio").iterdir()):
        hypothesis = _turns(out / "rttm" / f"{audio.stem}.rttm")[audio.stem]
        assert len({t.speaker for t in hypothesis}) >= 2


def test_diarize_pretrained_writes_the_turns_the_api_returns(corpus, tmp_path):
    audio = sorted((corpus / "audio").iterdir())[0]
    assert main(["diarize", str(audio), "--pretrained", "--out", str(tmp_path / "rttm"), "--device", "cpu"]) == 0
    written = _turns(tmp_path / "rttm" / f"{audio.stem}.rttm")[audio.stem]
    annotation = Diarizer.pretrained(device="cpu")(audio)
    returned = sorted((round(s.start, 2), round(s.end, 2)) for s, _ in annotation.itertracks())
    assert returned == sorted((round(t.start, 2), round(t.end, 2)) for t in written)
    assert len(annotation.labels()) == len({t.speaker for t in written})


def test_pseudo_model_pretrained_labels_unannotated_audio_with_that_pipeline(corpus, tmp_path):
    store_path = tmp_path / "store"
    assert main(["features", str(corpus / "audio"), "--store", str(store_path), "--jobs", "1", "--quiet",
                 "--pseudo-model", "pretrained"]) == 0
    store = Store(store_path, create=False)
    view = load_view(store, "default")
    pipeline = Diarizer.pretrained(device="cpu")
    for rec_id, rec in view.recordings.items():
        assert rec.pseudo
        group = store.open("labels", rec.labels)
        assert group.attrs["pseudo"] and group.attrs["pseudo_method"]["method"] == PRETRAINED_METHOD
        labels = np.asarray(group["labels"][:])  # (base frames, speakers) at the features' hop
        speech = labels.any(axis=1)
        annotation = pipeline(corpus / "audio" / Path(rec.source).name)
        assert len(annotation.labels()) == int(labels.any(axis=0).sum())
        assert speech.mean() == pytest.approx(annotation.get_timeline().support().duration() / (rec.frames * 0.01), abs=0.02)


def test_evaluate_pretrained_tunes_only_on_the_scored_recordings_when_asked(corpus, tmp_path):
    flags = ["evaluate", "--pretrained", "--audio-dir", str(corpus / "audio"), "--rttm-dir", str(corpus / "rttm")]
    assert main([*flags, "--tune", "--out", str(tmp_path / "refused")]) == 2  # no view of its own to tune on
    assert main([*flags, "--tune", "--tune-on-scored", "--out", str(tmp_path / "tuned")]) == 0
    report = json.loads((tmp_path / "tuned" / "report.json").read_text())
    assert report["tuned"]["tuned_on_scored"] is True
    assert report["tuned"]["der"] == pytest.approx(report["der"]["overall"]["der"], abs=1e-9)  # what it measured
    assert report["inference"]["cluster_threshold"] == report["tuned"]["cluster_threshold"]


def test_model_pseudo_labels_of_a_run_that_embeds_with_ge2e_are_what_diarize_writes(toy, corpus, tmp_path):
    # A run of today's default pipeline (EMBEDDINGS=ge2e) labels with the encoder on the audio, as diarize does.
    toy.train(tmp_path / "run", "EPOCHS=1", "EMBEDDINGS=ge2e")
    checkpoint = tmp_path / "run" / "last.pt"
    assert main(["features", str(corpus / "audio"), "--store", str(tmp_path / "store"), "--jobs", "1", "--quiet",
                 "--pseudo-model", str(checkpoint)]) == 0
    assert main(["diarize", *map(str, sorted((corpus / "audio").iterdir())), "--model", str(checkpoint),
                 "--out", str(tmp_path / "rttm"), "--device", "cpu"]) == 0
    store = Store(tmp_path / "store", create=False)
    for rec_id, rec in load_view(store, "default").recordings.items():
        group = store.open("labels", rec.labels)
        assert group.attrs["pseudo_method"]["embeddings"] == "ge2e"
        stored = np.asarray(group["labels"][:])
        turns = _turns(tmp_path / "rttm" / f"{rec_id}.rttm").get(rec_id, [])
        expected = np.zeros_like(stored)
        for column, speaker in enumerate(sorted({t.speaker for t in turns})):
            for t in (t for t in turns if t.speaker == speaker):
                expected[round(t.start * 100) : round(t.end * 100), column] = True
        # the same speakers, frame for frame (an RTTM keeps milliseconds: a turn's end may round one frame off)
        speakers = [stored[:, c] for c in range(stored.shape[1]) if stored[:, c].any()]
        written = [expected[:, c] for c in range(expected.shape[1]) if expected[:, c].any()]
        assert len(speakers) == len(written) and speakers
        for column in speakers:
            assert min(int((column != other).sum()) for other in written) <= 1
