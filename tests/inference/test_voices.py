"""The pipeline's steps that hear the audio: which samples a slot's embedding is computed from (its alone
speech, at the chunk's place in the recording, up to the chunk's edges), the encoder batched across chunks,
the recording decoded once into a file that goes away, and the VAD's speech frames on real speech."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from agencerdas.inference import voices
from agencerdas.inference.voices import RATE, Decoded, encoder_embeddings, speech_frames
from agencerdas.pretrained.vad import SileroVAD
from agencerdas.scoring.pipeline import Chunks
from tests.pretrained.conftest import speech  # noqa: F401  (the fixture: eSpeak sentences at 16 kHz)

SHIFT_S = 0.1  # model frame (s): 1600 samples
PER_FRAME = int(SHIFT_S * RATE)


class Recorder:
    """A speaker encoder that remembers what it was given and embeds a waveform by its first sample."""

    sample_rate, dim = RATE, 3

    def __init__(self):
        self.calls: list[list[np.ndarray]] = []

    def embed(self, waveforms):
        self.calls.append([np.asarray(w) for w in waveforms])
        rows = [[1.0, 0.0, 0.0] if len(w) == 0 else [0.0, np.cos(w[0] / 1e6), np.sin(w[0] / 1e6)] for w in waveforms]
        return np.asarray(rows, dtype=np.float32)


def ramp(n_frames: int) -> Decoded:
    """A recording whose sample i holds the value i: the samples an embedding saw tell where they came from."""
    return Decoded.of_array(np.arange(n_frames * PER_FRAME, dtype=np.float32))


def chunks_of(activity: np.ndarray, starts: list[int], frames: int) -> Chunks:
    return Chunks(np.asarray(starts), activity.astype(np.float32), np.zeros((*activity.shape[::2], 4), np.float32), frames)


def frame_span(first: int, last: int) -> np.ndarray:
    """The samples of model frames [first, last)."""
    return np.arange(first * PER_FRAME, last * PER_FRAME, dtype=np.float32)


def test_a_slot_is_embedded_from_where_it_speaks_alone_at_its_chunk_s_place_up_to_the_chunk_edges():
    # One chunk of 20 frames starting at frame 30: slot 0 speaks on frames 0-11 of the chunk, slot 1 on 8-19
    # (to the chunk's last frame); they overlap on 8-11. Alone: slot 0 frames 0-7, slot 1 frames 12-19.
    activity = np.zeros((1, 20, 3))
    activity[0, 0:12, 0] = 0.9
    activity[0, 8:20, 1] = 0.9
    encoder = Recorder()
    out = encoder_embeddings(chunks_of(activity, [30], 60), ramp(60), encoder, SHIFT_S)
    (first, second), = encoder.calls
    np.testing.assert_array_equal(first, frame_span(30, 38))
    np.testing.assert_array_equal(second, frame_span(42, 50))
    assert out.embeddings.shape == (1, 3, 3)
    assert not out.embeddings[0, 2].any(), "a slot that never speaks is neither embedded nor given a vector"
    assert np.allclose(np.linalg.norm(out.embeddings[0, :2], axis=1), 1.0)


def test_a_slot_alone_for_less_than_the_minimum_is_embedded_from_all_its_speech():
    alone_frames = int(voices.MIN_ALONE_S / SHIFT_S) - 1  # one frame short
    activity = np.zeros((1, 20, 2))
    activity[0, 0:15, 0] = 0.9
    activity[0, alone_frames:15, 1] = 0.9  # slot 0 alone only before slot 1 starts
    encoder = Recorder()
    encoder_embeddings(chunks_of(activity, [0], 20), ramp(20), encoder, SHIFT_S)
    slot0, slot1 = encoder.calls[0]
    np.testing.assert_array_equal(slot0, frame_span(0, 15))  # all its speech, overlap included
    np.testing.assert_array_equal(slot1, frame_span(alone_frames, 15))


def test_chunks_are_embedded_in_batches_and_every_speaking_slot_once(monkeypatch):
    monkeypatch.setattr(voices, "CHUNKS_PER_BATCH", 3)
    rng = np.random.default_rng(0)
    activity = (rng.random((7, 10, 2)) > 0.5) * 0.9
    activity[4] = 0.0  # a chunk where nobody speaks
    encoder = Recorder()
    out = encoder_embeddings(chunks_of(activity, list(range(0, 70, 10)), 70), ramp(70), encoder, SHIFT_S)
    assert [len(call) for call in encoder.calls] == [int((activity[c:c + 3] > 0.5).any(axis=1).sum()) for c in (0, 3, 6)]
    assert not out.embeddings[4].any()
    speaking = (activity > 0.5).any(axis=1)
    assert np.allclose(np.linalg.norm(out.embeddings[speaking], axis=1), 1.0)


def test_a_recording_is_decoded_once_at_the_encoder_rate_into_a_file_removed_on_exit(tmp_path):
    rate = 8000
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(2 * rate) / rate)).astype(np.float32)
    sf.write(tmp_path / "tone.flac", tone, rate)
    with Decoded(tmp_path / "tone.flac") as audio:
        assert isinstance(audio.samples, np.memmap)
        assert len(audio.samples) == pytest.approx(2 * RATE, abs=RATE // 100)
        assert float(np.sqrt(np.mean(np.square(audio.samples[RATE // 4 : -RATE // 4])))) == pytest.approx(0.3 / np.sqrt(2), rel=0.02)
        name = audio._name
    assert not os.path.exists(name)


def test_the_vad_marks_the_model_frames_of_speech_and_not_the_silence_around_it(speech):
    sentence = speech[("en-us+m3", 0)]
    silence = np.zeros(2 * RATE, dtype=np.float32)
    audio = Decoded.of_array(np.concatenate([silence, sentence, silence]))
    frames = int(np.ceil(len(audio.samples) / PER_FRAME))
    marked = speech_frames(SileroVAD.load(), audio, SHIFT_S, frames)
    assert marked.shape == (frames,)
    start, end = 2.0, 2.0 + len(sentence) / RATE
    inside = np.arange(int(start / SHIFT_S) + 5, int(end / SHIFT_S) - 5)
    assert marked[inside].mean() > 0.8
    assert not marked[: int(1.5 / SHIFT_S)].any() and not marked[int((end + 0.5) / SHIFT_S):].any()
