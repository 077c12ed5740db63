"""`agencerdas diarize`: valid RTTM for new audio, bad files reported, memory flat in the input's length."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from agencerdas.pipeline.rttm import parse_rttm
from agencerdas.inference.diarize import diarize

# Runs diarize in a fresh interpreter and prints the process's peak RSS (kB) from /proc.
_PEAK_RSS = """
import sys
from pathlib import Path
from agencerdas.inference.diarize import diarize
summary = diarize([Path(sys.argv[1])], Path(sys.argv[2]), Path(sys.argv[3]), device="cpu")
assert not summary.failures, summary.failures
print([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1])
"""


@pytest.fixture(scope="module")
def model(toy, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("diarize-run")
    toy.train(out, "EPOCHS=1")
    return out / "best.pt"


def _recording(path: Path, seconds: float, seed: int = 0) -> Path:
    """Two alternating tones over noise, 16 kHz mono."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    pitch = np.where((t // 2) % 2 == 0, 140.0, 260.0)
    audio = 0.2 * np.sin(2 * np.pi * np.cumsum(pitch) / 16000) + 0.003 * rng.standard_normal(len(t))
    sf.write(path, audio.astype(np.float32), 16000, subtype="PCM_16")
    return path


def test_diarize_writes_valid_rttm_clipped_to_the_audio_and_reports_bad_files(model, tmp_path):
    good = _recording(tmp_path / "call one.wav", 20.0)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really audio")
    summary = diarize([good, bad], model, tmp_path / "out", device="cpu")
    assert [Path(p).name for p in summary.written] == ["call_one.rttm"]
    assert summary.failures and summary.failures[0][0] == str(bad) and "decode" in summary.failures[0][1]
    lines = (tmp_path / "out" / "call_one.rttm").read_text().splitlines()
    assert all(len(line.split()) == 10 and line.split()[1] == "call_one" for line in lines)
    turns = parse_rttm(tmp_path / "out" / "call_one.rttm").get("call_one", [])
    assert all(0 <= seg.start and seg.end <= 20.0 + 1e-6 for seg in turns)


def test_memory_does_not_grow_with_the_recording_length(model, tmp_path):
    peaks = {}
    for minutes in (1, 20):
        audio = _recording(tmp_path / f"long{minutes}.wav", 60.0 * minutes)
        result = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(audio), str(model), str(tmp_path / "out")],
                                capture_output=True, text=True, check=True)
        peaks[minutes] = int(result.stdout.strip().splitlines()[-1]) / 1024  # MiB
    # The 20-minute input holds 77 MB of float32 samples and 46 MB of float32 features; neither may be resident.
    assert peaks[20] <= 1.2 * peaks[1] + 30, peaks


def test_a_second_diarize_into_a_store_finds_the_features_without_reading_the_audio(model, tmp_path, monkeypatch):
    from agencerdas.pipeline import statcache

    monkeypatch.setenv("AGENCERDAS_CACHE_DIR", str(tmp_path / "cache"))
    audio, store = _recording(tmp_path / "call.wav", 20.0), str(tmp_path / "store")
    assert not diarize([audio], model, tmp_path / "first", store_url=store, device="cpu").failures
    hashed = []
    hash_file = statcache.hash_file
    monkeypatch.setattr(statcache, "hash_file", lambda path: hashed.append(path) or hash_file(path))
    assert not diarize([audio], model, tmp_path / "second", store_url=store, device="cpu").failures
    assert hashed == []  # the stat cache knew the file; the store had its features
    assert (tmp_path / "second" / "call.rttm").read_text() == (tmp_path / "first" / "call.rttm").read_text()
    _recording(audio, 15.0, seed=1)  # the file changes: it is hashed again
    assert not diarize([audio], model, tmp_path / "third", store_url=store, device="cpu").failures
    assert hashed == [audio]
