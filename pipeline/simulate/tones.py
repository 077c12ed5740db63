"""A tiny tone corpus: each speaker a harmonic tone of its own pitch, with exact RTTMs.

Learnable in seconds (who speaks when is audible in the log-mel), so the test suite trains
on it and ``bench --size tiny`` measures on it; the eSpeak corpus (:mod:`.corpus`) is the demo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from agencerdas.pipeline.rttm import write_rttm
from agencerdas.stores.segments import Segment

#: Fundamental frequency (Hz) per speaker: distinct pitches make identity audible. `conversation` uses
#: the first two or three; tests of recordings with more speakers than a model has slots use all.
PITCHES = {"alice": 140.0, "bob": 230.0, "carol": 330.0, "dave": 520.0, "erin": 800.0, "frank": 90.0}


def voiced(f0: float, seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A harmonic, slightly vibrato tone (seconds * sample_rate samples) that sounds like a vowel."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))) / sample_rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 8))
    return (0.2 * wave + 0.002 * rng.standard_normal(len(t))).astype(np.float32)


def conversation(seed: int, seconds: float = 6.0) -> list[Segment]:
    """Turns of two or three speakers with one overlap, deterministic per seed."""
    rng = np.random.default_rng(seed)
    names = list(PITCHES)[: 2 + seed % 2]
    turns, t = [], 0.2
    while t < seconds - 1.0:
        speaker = names[len(turns) % len(names)]
        dur = float(rng.uniform(0.6, 1.4))
        turns.append(Segment(round(t, 3), round(min(dur, seconds - t - 0.1), 3), speaker))
        t += dur + (-0.3 if len(turns) == 2 else float(rng.uniform(0.1, 0.4)))  # the third turn overlaps
    return turns


def render(turns: list[Segment], seconds: float, sample_rate: int, seed: int) -> np.ndarray:
    """The turns' tones over faint noise: float32 (seconds * sample_rate,) samples."""
    rng = np.random.default_rng(seed)
    audio = 0.001 * rng.standard_normal(int(seconds * sample_rate)).astype(np.float32)
    for seg in turns:
        start = int(seg.start * sample_rate)
        tone = voiced(PITCHES[seg.speaker], seg.duration, sample_rate, rng)
        audio[start : start + len(tone)] += tone
    return audio


def make_corpus(
    root: Path, n: int = 3, seconds: float = 6.0, formats=("wav", "flac", "ogg"), rates=(16000, 22050, 8000)
) -> tuple[Path, Path]:
    """Write ``n`` recordings to ROOT/audio and their RTTMs to ROOT/rttm; returns both dirs."""
    audio_dir, rttm_dir = Path(root) / "audio", Path(root) / "rttm"
    audio_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rec = f"rec{i:02d}"
        turns = conversation(i, seconds)
        rate = rates[i % len(rates)]
        sf.write(audio_dir / f"{rec}.{formats[i % len(formats)]}", render(turns, seconds, rate, i), rate)
        write_rttm(rttm_dir / f"{rec}.rttm", rec, turns)
    return audio_dir, rttm_dir
