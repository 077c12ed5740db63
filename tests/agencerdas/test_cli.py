"""The command line as `make demo` drives it: the options it passes parse into working runs."""

from __future__ import annotations

import json

from agencerdas.cli import main


def test_simulate_takes_the_makefile_s_formats_and_rates(tmp_path):
    out = tmp_path / "corpus"
    assert main(["simulate", str(out), "--n", "2", "--min-duration", "4", "--max-duration", "5", "--quiet",
                 "--formats", "wav,flac", "--rates", "16000,22050", "--seed", "3"]) == 0
    corpus = json.loads((out / "corpus.json").read_text())
    assert corpus["n_recordings"] == 2
    assert {p.suffix for p in (out / "audio").iterdir()} == {".wav", ".flac"}
