"""The Python API: `Diarizer` gives the CLI's segments as a pyannote Annotation for a file or a
waveform at any rate, posteriors on request, the project's error for bad audio; `train` from Python;
`import agencerdas` loads neither torch nor librosa."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from pyannote.core import Annotation

from agencerdas import Diarizer, train
from agencerdas.inference.diarize import diarize
from agencerdas.pipeline.rttm import parse_rttm
from agencerdas.stores.errors import AgencerdasError
from tests.builders import PITCHES, voiced
from tests.fresh import loaded_by


@pytest.fixture(scope="module")
def model(toy, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("api-run")
    toy.train(out, "EPOCHS=2", "LR=3e-3")
    return out / "best.pt"


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """30 s of two of the toy corpus's voices taking 3-s turns over noise at 16 kHz, and its samples."""
    rng = np.random.default_rng(0)
    turns = [voiced(PITCHES["alice" if i % 2 else "bob"], 3.0, 16000, rng) for i in range(10)]
    audio = (np.concatenate(turns) + 0.003 * rng.standard_normal(30 * 16000)).astype(np.float32)
    path = tmp_path_factory.mktemp("api-audio") / "call.wav"
    sf.write(path, audio, 16000, subtype="FLOAT")
    return path, audio


def _turns(annotation: Annotation) -> list[tuple[float, float, str]]:
    return sorted((round(s.start, 3), round(s.end, 3), label) for s, _, label in annotation.itertracks(yield_label=True))


def test_the_api_gives_the_cli_s_segments_for_a_file(model, recording, tmp_path):
    path, _ = recording
    diarizer = Diarizer.from_checkpoint(model, device="cpu")
    annotation, posteriors = diarizer(path, return_posteriors=True)
    assert isinstance(annotation, Annotation) and annotation.uri == "call" and len(annotation) > 0
    # one column per speaker the clustering found (two tones)
    assert posteriors.shape[1] == len(annotation.labels()) == 2
    assert len(posteriors) * diarizer.frame_shift_s == pytest.approx(30.0, abs=0.2)
    assert not diarize([path], model, tmp_path / "cli", device="cpu").failures
    cli = parse_rttm(tmp_path / "cli" / "call.rttm")["call"]
    assert _turns(annotation) == sorted((round(s.start, 3), round(s.end, 3), s.speaker) for s in cli)


def test_a_waveform_at_any_rate_and_channel_count_is_diarized(model, recording):
    path, audio = recording
    diarizer = Diarizer.from_checkpoint(model, device="cpu")
    same = diarizer(audio, sample_rate=16000)
    assert _turns(same) == _turns(diarizer(path))  # the waveform of the file: the file's answer
    stereo = np.stack([soxr.resample(audio, 16000, 44100)] * 2)  # (channels, samples) at 44.1 kHz
    resampled = diarizer(stereo, sample_rate=44100, uri="meeting")
    assert resampled.uri == "meeting" and abs(resampled.get_timeline().duration() - same.get_timeline().duration()) < 2.0
    assert _turns(diarizer(stereo.T, sample_rate=44100, uri="meeting")) == _turns(resampled)  # soundfile's layout


def test_bad_audio_raises_the_project_error(model, tmp_path):
    diarizer = Diarizer.from_checkpoint(model, device="cpu")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really audio")
    with pytest.raises(AgencerdasError, match="broken.wav"):
        diarizer(broken)
    with pytest.raises(AgencerdasError, match="sample_rate must be a positive integer"):
        diarizer(np.zeros(16000, np.float32), sample_rate=0)
    with pytest.raises(AgencerdasError, match="far beyond full scale"):
        diarizer(np.full(16000, 1e30, np.float32), sample_rate=16000)


def test_train_from_python_takes_the_cli_s_overrides_and_protects_a_finished_run(toy, tmp_path):
    history = train(toy.url, out=tmp_path / "run", overrides=[*toy.tiny, "EPOCHS=1"], progress=False)
    assert history[-1]["epoch"] == 1 and (tmp_path / "run" / "best.pt").exists()
    with pytest.raises(AgencerdasError, match="already holds a run"):
        train(toy.url, out=tmp_path / "run", overrides=[*toy.tiny, "EPOCHS=1"], progress=False)
    with pytest.raises(AgencerdasError, match="unknown override 'EPOCS=1'"):
        train(toy.url, out=tmp_path / "other", overrides=["EPOCS=1"])


def test_importing_the_package_loads_neither_torch_nor_librosa():
    loaded, _ = loaded_by("import agencerdas", ("torch", "librosa", "inference", "training"))
    assert loaded == []
