"""Simulated conversations after Landini et al. (2022), spoken by eSpeak NG.

"From Simulated Mixtures to Simulated Conversations as Training Data for End-to-End
Neural Diarization" (Interspeech 2022) replaces independently placed utterances
with turn taking: each utterance follows the previous one after a pause or starts
before it ends, so overlaps happen where they do in dialogue, at turn changes.

Times are integer sample indices at :data:`~pipeline.simulate.espeak.SAMPLE_RATE_HZ`
until the reference segments are produced, so the RTTM is exact to one sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from agencerdas.stores.segments import Segment
from agencerdas.pipeline.simulate.acoustics import add_noise, reverberate, room_impulse_response
from agencerdas.pipeline.simulate.config import SimulationConfig
from agencerdas.pipeline.simulate.espeak import SAMPLE_RATE_HZ, Espeak
from agencerdas.pipeline.simulate.speakers import POOLS, Speaker
from agencerdas.pipeline.simulate.words import WORDS
from agencerdas.stores.errors import AgencerdasError

# Silence before the first and after the last utterance, in seconds.
_EDGE_SILENCE_S = (0.25, 1.0)
# Per-speaker level in dB: talkers sit at different distances from the microphone.
_SPEAKER_GAIN_DB = (-6.0, 0.0)
# Peak level of the final mix in dBFS: recordings are not all normalised alike.
_PEAK_DBFS = (-6.0, -1.0)
# Stereo placement of a talker, as the angle of (left, right) = (cos, sin), in radians.
_PAN_RAD = (0.15 * np.pi, 0.35 * np.pi)
# Samples quieter than this, relative to an utterance's peak, count as silence (dB).
TRIM_THRESHOLD_DB = -40.0
_MAX_WORDS = 40
# Chance that a clause ends after a word (once it has 3 words), and that a sentence is a question.
_P_CLAUSE_END = 0.25
_P_QUESTION = 0.2


@dataclass(frozen=True, eq=False)
class Turn:
    """One utterance placed on the timeline; ``start`` in samples at SAMPLE_RATE_HZ."""

    speaker: int
    start: int
    audio: np.ndarray

    @property
    def end(self) -> int:
        return self.start + self.audio.size


@dataclass(frozen=True, eq=False)
class Conversation:
    """A rendered conversation: ``audio`` is float32 (samples, channels) at SAMPLE_RATE_HZ."""

    speakers: tuple[Speaker, ...]
    audio: np.ndarray
    segments: tuple[Segment, ...]
    target_duration_s: float
    rt60_s: tuple[float, ...] | None


def _seconds(value_s: float) -> int:
    return int(round(value_s * SAMPLE_RATE_HZ))


def _placement(pan_rad: float, n_channels: int) -> np.ndarray:
    """Per-channel gains of a talker: constant-power panning in stereo, 1 in mono."""
    if n_channels == 1:
        return np.ones(1, dtype=np.float32)
    return np.array([np.cos(pan_rad), np.sin(pan_rad)], dtype=np.float32)


def make_text(words: Sequence[str], mean_words: float, rng: np.random.Generator) -> str:
    """Random words with clause punctuation; the word count is geometric with mean ``mean_words``.

    The geometric law gives many one- or two-word turns (backchannels) and a long
    tail of long turns, as in real dialogue. Commas and full stops give eSpeak clause
    boundaries, i.e. pauses and falling intonation; question marks give rising ones.
    """
    n_words = min(int(rng.geometric(1.0 / mean_words)), _MAX_WORDS)
    tokens = [words[i] for i in rng.integers(0, len(words), n_words)]
    clause_length = 0
    for i in range(n_words - 1):
        clause_length += 1
        if clause_length >= 3 and rng.random() < _P_CLAUSE_END:
            tokens[i] += "," if rng.random() < 0.5 else "."
            clause_length = 0
    tokens[-1] += "?" if rng.random() < _P_QUESTION else "."
    return " ".join(tokens)


def trim_silence(samples: np.ndarray, threshold_db: float = TRIM_THRESHOLD_DB) -> np.ndarray:
    """``samples`` without leading and trailing samples below ``threshold_db`` relative to the peak."""
    magnitude = np.abs(samples.astype(np.float32))
    peak = float(magnitude.max(initial=0.0))
    if peak == 0.0:
        return samples[:0]
    loud = np.flatnonzero(magnitude >= peak * 10.0 ** (threshold_db / 20.0))
    return samples[loud[0] : loud[-1] + 1]


def plan_turns(
    n_speakers: int,
    target_samples: int,
    config: SimulationConfig,
    rng: np.random.Generator,
    next_utterance: Callable[[int], np.ndarray],
) -> list[Turn]:
    """Place utterances from ``next_utterance(speaker)`` until the floor reaches ``target_samples``.

    Every speaker talks once, in random order, before free turn taking starts, so a
    short recording still has all its speakers. A speaker never overlaps itself: a
    turn never starts before the same speaker's previous turn has ended.
    """
    turns: list[Turn] = []
    own_end = [0] * n_speakers
    floor_end = _seconds(rng.uniform(*_EDGE_SILENCE_S))  # end of the latest-ending turn so far
    floor_length = 0  # length of that turn, which caps the overlap
    introductions = rng.permutation(n_speakers)
    previous = -1
    while len(turns) < n_speakers or floor_end < target_samples:
        if len(turns) < n_speakers:
            speaker = int(introductions[len(turns)])
        elif n_speakers == 1 or rng.random() < config.p_same_speaker:
            speaker = previous
        else:
            speaker = int(rng.choice([s for s in range(n_speakers) if s != previous]))
        audio = next_utterance(speaker)
        if not turns:
            start = floor_end
        elif speaker == previous:
            start = floor_end + _seconds(rng.exponential(config.pause_same_mean_s))
        elif rng.random() < config.p_overlap:
            start = floor_end - min(_seconds(rng.exponential(config.overlap_mean_s)), floor_length)
        else:
            start = floor_end + _seconds(rng.exponential(config.pause_mean_s))
        turn = Turn(speaker, max(start, own_end[speaker]), audio)
        turns.append(turn)
        own_end[speaker] = turn.end
        if turn.end > floor_end:
            floor_end, floor_length = turn.end, audio.size
        previous = speaker
    return turns


def overlap_stats(segments: Sequence[Segment]) -> tuple[float, float]:
    """(speech, overlap) durations in seconds: time with at least one, and at least two, speakers."""
    # At equal times the -1 (end) sorts before the +1 (start): touching turns do not overlap.
    events = sorted([(s.start, 1) for s in segments] + [(s.end, -1) for s in segments])
    speech = overlap = 0.0
    active, previous_time = 0, 0.0
    for time, change in events:
        if active >= 1:
            speech += time - previous_time
        if active >= 2:
            overlap += time - previous_time
        active += change
        previous_time = time
    return speech, overlap


def _opening(
    pool: Sequence[Speaker], config: SimulationConfig, index: int
) -> tuple[tuple[np.random.Generator, ...], float, tuple[Speaker, ...]]:
    """The draws of recording ``index`` before any speech: its three random streams (plan, levels,
    room), its target length in seconds and its speakers."""
    entropy = np.random.SeedSequence([config.seed, POOLS.index(config.pool), index])
    plan_rng, level_rng, room_rng = (np.random.default_rng(s) for s in entropy.spawn(3))
    target_s = float(plan_rng.uniform(config.min_duration_s, config.max_duration_s))
    counts = sorted(config.speakers_per_rec)
    weights = np.array([config.speakers_per_rec[k] for k in counts], dtype=float)
    n_speakers = int(plan_rng.choice(counts, p=weights / weights.sum()))
    voices = config.voices_of(pool, index)  # the whole pool unless some voices are held out
    speakers = tuple(voices[i] for i in plan_rng.choice(len(voices), size=n_speakers, replace=False))
    return (plan_rng, level_rng, room_rng), target_s, speakers


def conversation_speakers(pool: Sequence[Speaker], config: SimulationConfig, index: int) -> tuple[Speaker, ...]:
    """The speakers of recording ``index``, as :func:`simulate_conversation` draws them, without synthesis."""
    return _opening(pool, config, index)[2]


def simulate_conversation(
    pool: Sequence[Speaker], config: SimulationConfig, index: int, tts: Espeak, n_channels: int
) -> Conversation:
    """Recording ``index`` of the corpus described by ``config``, speakers drawn from ``pool`` (from its
    held-out or its other voices, :meth:`SimulationConfig.voices_of`).

    Depends only on (``config.seed``, ``config.pool``, ``index``), the turn-taking
    parameters and, with held-out voices, which voices it draws from: three independent random streams drive the conversation, the
    speakers' levels and placement, and the room, so switching noise or reverb on
    or off leaves the words and the reference segments unchanged.
    """
    (plan_rng, level_rng, room_rng), target_s, speakers = _opening(pool, config, index)
    n_speakers = len(speakers)

    def next_utterance(speaker_index: int) -> np.ndarray:
        speaker = speakers[speaker_index]
        text = make_text(WORDS[speaker.words], config.mean_words, plan_rng)
        samples = trim_silence(
            tts.synthesize(
                text,
                speaker.voice,
                rate_wpm=speaker.rate_wpm,
                pitch=speaker.pitch,
                pitch_range=speaker.pitch_range,
                seed=int(plan_rng.integers(2**31)),
            )
        )
        if samples.size == 0:
            raise AgencerdasError(f"eSpeak NG voice {speaker.voice!r} produced only silence for {text!r}")
        return samples.astype(np.float32) / 32768.0

    turns = plan_turns(n_speakers, _seconds(target_s), config, plan_rng, next_utterance)
    n_samples = max(turn.end for turn in turns) + _seconds(plan_rng.uniform(*_EDGE_SILENCE_S))

    gains = 10.0 ** (level_rng.uniform(*_SPEAKER_GAIN_DB, size=n_speakers) / 20.0)
    pans = level_rng.uniform(*_PAN_RAD, size=n_speakers)
    peak_dbfs = level_rng.uniform(*_PEAK_DBFS)

    mix = np.zeros((n_samples, n_channels), dtype=np.float32)
    rt60s = []
    for speaker_index in range(n_speakers):
        track = np.zeros(n_samples, dtype=np.float32)
        for turn in turns:
            if turn.speaker == speaker_index:
                track[turn.start : turn.end] = turn.audio
        if config.reverb:
            # One response per talker: each sits at its own place in the room.
            response, rt60 = room_impulse_response(room_rng, SAMPLE_RATE_HZ)
            track = reverberate(track, response)
            rt60s.append(rt60)
        mix += track[:, None] * (gains[speaker_index] * _placement(pans[speaker_index], n_channels))[None, :]

    if config.noise_snr_db is not None:
        speech_mask = np.zeros(n_samples, dtype=bool)
        for turn in turns:
            speech_mask[turn.start : turn.end] = True
        add_noise(mix, speech_mask, config.noise_snr_db, room_rng)
    mix *= 10.0 ** (peak_dbfs / 20.0) / max(float(mix.max()), -float(mix.min()), 1e-9)

    segments = tuple(
        Segment(turn.start / SAMPLE_RATE_HZ, turn.audio.size / SAMPLE_RATE_HZ, speakers[turn.speaker].id)
        for turn in turns
    )
    return Conversation(speakers, mix, segments, target_s, tuple(rt60s) if config.reverb else None)
