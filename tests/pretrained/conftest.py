"""Speech for the pretrained components' tests: eSpeak sentences at 16 kHz, made once per session."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from agencerdas.pipeline.simulate.espeak import SAMPLE_RATE_HZ, Espeak

SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Every morning she walks to the market and buys fresh bread and fruit.",
)
VOICES = ("en-us+m3", "en-us+f3")


@pytest.fixture(scope="session")
def speech() -> dict[tuple[str, int], np.ndarray]:
    """(voice, sentence index) -> float32 (samples,) speech at 16 kHz, loud (about -20 dBFS RMS)."""
    with Espeak() as tts:
        raw = {(voice, i): tts.synthesize(text, voice) for voice in VOICES for i, text in enumerate(SENTENCES)}
    return {key: soxr.resample(samples.astype(np.float32) / 32768, SAMPLE_RATE_HZ, 16000).astype(np.float32) for key, samples in raw.items()}
