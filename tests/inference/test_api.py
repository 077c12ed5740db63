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
from agencerdas.scoring.cluster import SpeakerCountWarning
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


def test_pcm_integer_waveforms_are_scaled_to_full_scale(model, recording):
    _, audio = recording
    diarizer = Diarizer.from_checkpoint(model, device="cpu")
    floats = _turns(diarizer(audio, sample_rate=16000))
    # as a WAV file holds them: int16 32767 is full scale, not 32767 times it
    assert _turns(diarizer(np.round(audio * 32767).astype(np.int16), sample_rate=16000)) == floats
    assert _turns(diarizer(np.round(audio * (2**31 - 1)).astype(np.int32), sample_rate=16000)) == floats
    eight_bit = diarizer(np.round(audio * 127 + 128).astype(np.uint8), sample_rate=16000)  # 8-bit WAV: centred on 128
    assert abs(eight_bit.get_timeline().duration() - diarizer(audio, sample_rate=16000).get_timeline().duration()) < 2.0


@pytest.mark.parametrize("audio, rate, message", [
    (np.zeros(16000, np.float32), 1, "sample_rate=1 Hz is outside"),
    (np.zeros(16000, np.float32), 10**9, "sample_rate=1000000000 Hz is outside"),
    (np.array(["0.1", "0.2"]), 16000, "not audio"),
    ([[0.0, 0.1], [0.2]], 16000, "not an array of samples"),
    (np.zeros(16000, np.complex64), 16000, "complex"),
    (np.zeros(16000, np.int64), 16000, "int64"),
])
def test_a_waveform_that_is_not_audio_at_a_usable_rate_is_refused_by_name(model, audio, rate, message):
    with pytest.raises(AgencerdasError, match=message):
        Diarizer.from_checkpoint(model, device="cpu")(audio, sample_rate=rate)


def test_a_path_says_what_is_wrong_with_it_and_bytes_are_a_path(model, recording, tmp_path):
    path, _ = recording
    diarizer = Diarizer.from_checkpoint(model, device="cpu")
    with pytest.raises(AgencerdasError, match="is a directory"):
        diarizer(tmp_path)
    with pytest.raises(AgencerdasError, match="missing.wav does not exist"):
        diarizer(tmp_path / "missing.wav")
    assert _turns(diarizer(bytes(path))) == _turns(diarizer(path))


def test_a_rate_with_a_file_or_none_with_a_waveform_is_refused_by_name(model, recording):
    path, audio = recording
    diarizer = Diarizer.from_checkpoint(model, device="cpu")
    with pytest.raises(AgencerdasError, match="sample_rate=16000 is for waveforms"):
        diarizer(path, sample_rate=16000)
    with pytest.raises(AgencerdasError, match="a waveform needs its sample_rate in Hz"):
        diarizer(audio)
    with pytest.raises(AgencerdasError, match="uri must be a string"):
        diarizer(audio, sample_rate=16000, uri=3)
    with pytest.raises(AgencerdasError, match="the checkpoint must be a path .* got ndarray"):
        Diarizer.from_checkpoint(audio)


@pytest.mark.parametrize("arguments, message", [
    ({"num_speakers": 2.5}, "num_speakers=2.5 must be a whole number"),
    ({"num_speakers": "3"}, "num_speakers='3' must be a whole number"),
    ({"max_speakers": True}, "max_speakers=True must be a whole number"),
    ({"chunk_s": "10"}, r"chunk_s \(--chunk-s\) must be a positive number of seconds, got '10'"),
    ({"chunk_s": 10, "chunk_hop_s": 20}, r"chunk_hop_s \(--chunk-hop-s\) = 20 s must be"),
    ({"chunk_s": 5, "clustering": "off"}, "stitches its training windows"),
])
def test_wrong_speaker_numbers_and_chunks_are_refused_before_the_model_loads(model, arguments, message):
    with pytest.raises(AgencerdasError, match=message):
        Diarizer.from_checkpoint(model, device="cpu", **arguments)


def test_a_recording_whose_chunks_would_overflow_clustering_is_refused_before_the_model_runs(model):
    diarizer = Diarizer.from_checkpoint(model, device="cpu", chunk_s=1, chunk_hop_s=0.5)
    ten_hours = 10 * 3600 * 100  # base frames of 10 ms
    with pytest.raises(AgencerdasError, match=r"10.0 h of audio .* more than the 8192 slots .* longer --chunk-hop-s"):
        diarizer.diarize_features(None, ten_hours, 36000.0)  # refused before any feature is read


def test_a_number_of_speakers_that_cannot_be_given_is_said_not_silent(model, recording, tmp_path):
    path, _ = recording
    # one 30-s chunk in which both voices speak, each in its own slot: one speaker cannot be had
    with pytest.warns(SpeakerCountWarning, match=r"asked for exactly 1 speaker\(s\), found 2: 2 slots speak together"):
        assert len(Diarizer.from_checkpoint(model, device="cpu", num_speakers=1)(path).labels()) == 2
    with pytest.warns(SpeakerCountWarning, match=r"asked for exactly 50 speaker\(s\), found 2: only 2 chunk slot"):
        Diarizer.from_checkpoint(model, device="cpu", num_speakers=50)(path)
    summary = diarize([path], model, tmp_path / "out", device="cpu", max_speakers=1)
    assert summary.speaker_notes == [(str(path), summary.speaker_notes[0][1])]
    assert "at most 1 speaker(s), found 2" in summary.speaker_notes[0][1]
    printed = summary.format()
    assert "1 RTTM(s) written (1 with another number of speakers than asked)" in printed
    assert f"SPEAKERS {path}: asked for at most 1" in printed


def test_a_one_sample_file_gives_an_rttm_the_project_reads_back(model, tmp_path):
    sf.write(tmp_path / "onesample.wav", np.array([0.5], np.float32), 16000)
    assert not diarize([tmp_path / "onesample.wav"], model, tmp_path / "out", device="cpu").failures
    assert parse_rttm(tmp_path / "out" / "onesample.rttm") == {}


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
