"""`agencerdas evaluate` on a corpus description: the subset asked (a protocol's test subset) is scored, the
same as scoring its files as an audio directory."""

from __future__ import annotations

import json

import pytest

from agencerdas.cli import main
from tests.corpora import PROTOCOL, tone_corpus, write_kaldi, write_protocol


@pytest.fixture(scope="module")
def model(toy, tmp_path_factory):
    run = tmp_path_factory.mktemp("evaluate-corpora-run")
    toy.train(run, "EPOCHS=1")
    return run / "best.pt"


def test_evaluate_scores_a_protocols_test_subset_as_it_scores_the_same_files(model, tmp_path):
    recs = tone_corpus(tmp_path / "tones", n=4)
    yml = write_protocol(tmp_path / "db", recs, {"train": ["rec00", "rec01"], "development": ["rec02"],
                                                 "test": ["rec03"]})
    base = ["evaluate", "--model", str(model), "--store", str(tmp_path / "store"), "--device", "cpu"]
    assert main([*base, "--protocol", PROTOCOL, "--database-yml", str(yml), "--subset", "test", "--view", "p",
                 "--out", str(tmp_path / "p")]) == 0
    tones = tmp_path / "tones"
    test_dir = tmp_path / "test-audio"
    test_dir.mkdir()
    (test_dir / recs[3].path.name).symlink_to(recs[3].path)
    assert main([*base, "--audio-dir", str(test_dir), "--rttm-dir", str(tones / "rttm"), "--uem-dir",
                 str(tones / "uem"), "--view", "a", "--out", str(tmp_path / "a")]) == 0
    kaldi = write_kaldi(tmp_path / "kaldi-test", recs[3:])
    assert main([*base, "--kaldi-dir", f"test={kaldi}", "--view", "k", "--out", str(tmp_path / "k")]) == 0

    reports = {name: json.loads((tmp_path / name / "report.json").read_text()) for name in ("p", "a", "k")}
    for report in reports.values():
        assert list(report["speaker_count"]["per_recording"]) == ["rec03"]  # the test subset, and only it
        assert report["der"]["overall"]["der"] == pytest.approx(reports["a"]["der"]["overall"]["der"], abs=1e-9)
