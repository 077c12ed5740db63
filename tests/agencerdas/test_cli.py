"""The command line as `make demo` drives it: the options it passes parse into working runs."""

from __future__ import annotations

import json

import pytest

from agencerdas.cli import main


def test_simulate_takes_the_makefile_s_formats_and_rates(tmp_path):
    out = tmp_path / "corpus"
    assert main(["simulate", str(out), "--n", "2", "--min-duration", "4", "--max-duration", "5", "--quiet",
                 "--formats", "wav,flac", "--rates", "16000,22050", "--seed", "3"]) == 0
    corpus = json.loads((out / "corpus.json").read_text())
    assert corpus["n_recordings"] == 2
    assert {p.suffix for p in (out / "audio").iterdir()} == {".wav", ".flac"}


def test_simulate_passes_every_option_to_its_config(tmp_path, monkeypatch):
    from agencerdas.pipeline import simulate

    seen = []
    monkeypatch.setattr(simulate, "simulate_corpus",
                        lambda out, config, progress: seen.append(config) or {"n_recordings": 0, "duration_s": 0,
                                                                              "overlap_s": 0, "speech_s": 1})
    assert main(["simulate", str(tmp_path / "c"), "--n", "3", "--pool", "test", "--seed", "4", "--min-duration", "7",
                 "--max-duration", "9", "--formats", "flac", "--rates", "22050", "--stereo", "--noise-snr", "5",
                 "--reverb", "--jobs", "2", "--quiet", "--speakers", "5:0.5,6:0.3,7:0.2"]) == 0
    (config,) = seen
    assert (config.n_recordings, config.pool, config.seed, config.min_duration_s, config.max_duration_s) == \
        (3, "test", 4, 7.0, 9.0)
    assert (config.formats, config.rates, config.stereo, config.noise_snr_db, config.reverb, config.jobs) == \
        (("flac",), (22050,), True, 5.0, True, 2)
    assert config.speakers_per_rec == {5: 0.5, 6: 0.3, 7: 0.2}
    for bad in ("5:half", "5", "0:1", "3:-1"):
        with pytest.raises(SystemExit) as usage:  # argparse: a usage error, exit status 2
            main(["simulate", str(tmp_path / "d"), "--speakers", bad])
        assert usage.value.code == 2
