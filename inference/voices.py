"""The pipeline's steps that hear the audio itself: speaker embeddings from a pretrained encoder and speech
from a pretrained VAD (:mod:`agencerdas.pretrained`), on a recording decoded once.

A recording is decoded once, at the encoder's rate, into a temporary float32 file mapped into memory
(:class:`Decoded`): the steps read the samples they need, so memory does not grow with the recording.
Model frame ``t`` covers samples ``[t * shift * rate, (t + 1) * shift * rate)``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from agencerdas.pipeline.audio import stream_mono
from agencerdas.pretrained.encoder import SpeakerEncoder, load_encoder
from agencerdas.pretrained.vad import SileroVAD, regions_from_probabilities
from agencerdas.scoring.pipeline import Chunks
from agencerdas.stores.errors import AgencerdasError

#: Audio rate of both pretrained components (Hz).
RATE = 16000
#: A slot's embedding is computed from the frames where it speaks alone (no other slot of its chunk above
#: one half) when they last this long; else from all its speech (overlapped speech carries two voices, but a
#: shorter clean stretch is too little for the encoder: GE2E was trained on 1.6-s partials).
MIN_ALONE_S = 0.8
#: Posterior above which a slot's frame counts as its speech when choosing the audio to embed, whatever the
#: decision threshold: tuning re-clusters the same embeddings at every threshold it tries, so the settings it
#: measured are the settings that run.
EMBED_THRESHOLD = 0.5
#: A slot never above EMBED_THRESHOLD is embedded from its frames above this (a low decision threshold can make it
#: speak); a slot never above it gets no embedding, and the pipeline neither clusters nor assigns it.
EMBED_FLOOR = 0.1
#: Chunks whose slots are embedded in one batch of the encoder (audio held: about this many chunks of speech).
CHUNKS_PER_BATCH = 64


class Decoded:
    """A recording's mono samples at :data:`RATE`, decoded once into a temporary file and mapped into memory.

    ``samples``: float32 (n,) memory map, read lazily. Use as a context manager: the file is removed on exit.
    """

    def __init__(self, path: Path, offset_s: float | None = None, duration_s: float | None = None):
        handle, name = tempfile.mkstemp(prefix="agencerdas-audio-", suffix=".f32")
        self._name = name
        total = 0
        with os.fdopen(handle, "wb") as out:
            for block in stream_mono(Path(path), RATE, 30.0, offset_s, duration_s):
                out.write(np.ascontiguousarray(block, dtype=np.float32).tobytes())
                total += len(block)
        self.samples = np.memmap(name, dtype=np.float32, mode="r", shape=(total,)) if total else np.zeros(0, np.float32)

    @classmethod
    def of_array(cls, samples: np.ndarray) -> "Decoded":
        """Samples already in memory at :data:`RATE` (the API's waveforms)."""
        decoded = cls.__new__(cls)
        decoded._name, decoded.samples = None, np.asarray(samples, dtype=np.float32)
        return decoded

    def __enter__(self) -> "Decoded":
        return self

    def __exit__(self, *exc) -> None:
        self.samples = np.zeros(0, np.float32)
        if self._name:
            os.unlink(self._name)
            self._name = None


def decoded(path: Path | str, offset_s: float | None = None, duration_s: float | None = None,
            needed: bool = True) -> Decoded | contextlib.nullcontext:
    """A context giving the recording :class:`Decoded` when ``needed`` (the pipeline hears the audio), else None;
    ``duration_s`` counts only with ``offset_s`` (a region of a longer file)."""
    if not needed:
        return contextlib.nullcontext()
    return Decoded(Path(path), offset_s, duration_s if offset_s is not None else None)


def _frame_samples(frames: np.ndarray, frame_shift_s: float) -> list[tuple[int, int]]:
    """Sample ranges [a, b) of runs of consecutive model frames ``frames`` (sorted indices)."""
    if not len(frames):
        return []
    breaks = np.flatnonzero(np.diff(frames) > 1)
    firsts = np.concatenate(([frames[0]], frames[breaks + 1]))
    lasts = np.concatenate((frames[breaks], [frames[-1]])) + 1
    scale = frame_shift_s * RATE
    return [(int(round(a * scale)), int(round(b * scale))) for a, b in zip(firsts, lasts)]


def _slot_audio(chunks: Chunks, chunk: int, slot: int, samples: np.ndarray, frame_shift_s: float) -> np.ndarray:
    """The samples where ``slot`` of ``chunk`` speaks alone (no other slot above :data:`EMBED_THRESHOLD`), or all
    its speech when that is under :data:`MIN_ALONE_S` (see the constants)."""
    activity = chunks.activity[chunk]  # (L, S)
    speaks = activity[:, slot] > EMBED_THRESHOLD
    if not speaks.any():
        speaks = activity[:, slot] > EMBED_FLOOR
    others = np.delete(activity > EMBED_THRESHOLD, slot, axis=1).any(axis=1)
    alone = speaks & ~others
    use = alone if alone.sum() * frame_shift_s >= MIN_ALONE_S else speaks
    ranges = _frame_samples(np.flatnonzero(use) + int(chunks.starts[chunk]), frame_shift_s)
    return np.concatenate([samples[a:b] for a, b in ranges]) if ranges else np.zeros(0, np.float32)


def encoder_embeddings(chunks: Chunks, decoded: Decoded, encoder: SpeakerEncoder, frame_shift_s: float) -> Chunks:
    """``chunks`` with every speaking slot's embedding (C, S, E) from ``encoder`` on the recording's audio
    where the slot speaks alone (slots never above :data:`EMBED_FLOOR` get zeros: the pipeline skips them).
    Batched across slots and chunks, :data:`CHUNKS_PER_BATCH` chunks at a time."""
    if encoder.sample_rate != RATE:
        raise AgencerdasError(f"the speaker encoder expects {encoder.sample_rate} Hz audio; the pipeline feeds {RATE} Hz")
    count, _, slots = chunks.activity.shape
    embeddings = np.zeros((count, slots, encoder.dim), dtype=np.float32)
    speaking = (chunks.activity > EMBED_FLOOR).any(axis=1)  # (C, S)
    for first in range(0, count, CHUNKS_PER_BATCH):
        where = [(c, s) for c in range(first, min(first + CHUNKS_PER_BATCH, count)) for s in np.flatnonzero(speaking[c])]
        if not where:
            continue
        audio = [_slot_audio(chunks, c, s, decoded.samples, frame_shift_s) for c, s in where]
        vectors = encoder.embed(audio)
        for (c, s), vector in zip(where, vectors):
            embeddings[c, s] = vector
    return replace(chunks, embeddings=embeddings)


def speech_frames(vad: SileroVAD, decoded: Decoded, frame_shift_s: float, n_frames: int) -> np.ndarray:
    """(n_frames,) bool: model frames inside a speech region the VAD finds (its own rules: hysteresis,
    minimum speech and silence, padding)."""
    regions = regions_from_probabilities(vad.speech_probability(decoded.samples), len(decoded.samples))
    speech = np.zeros(n_frames, dtype=bool)
    for start_s, end_s in regions:
        speech[int(start_s / frame_shift_s) : int(np.ceil(end_s / frame_shift_s))] = True
    return speech


@dataclass
class Voices:
    """The pretrained components a pipeline's settings ask for, loaded once: ``encoder`` (None: the model's
    own embeddings) and ``vad`` (None: no speech gate)."""

    encoder: SpeakerEncoder | None = None
    vad: SileroVAD | None = None

    @classmethod
    def load(cls, embeddings: str, vad: str, device: str = "cpu") -> "Voices":
        return cls(None if embeddings == "head" else load_encoder(embeddings, device),
                   SileroVAD.load(device) if vad == "silero" else None)

    @property
    def needs_audio(self) -> bool:
        return self.encoder is not None or self.vad is not None
