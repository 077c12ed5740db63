"""Tests of the demo-corpus simulator: eSpeak binding, speaker pools, conversations, corpus files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from agencerdas.pipeline.rttm import Segment, parse_rttm, parse_uem
from agencerdas.pipeline.simulate import Espeak, SimulationConfig, simulate_corpus, speaker_pool, speaker_pools
from agencerdas.pipeline.simulate.conversation import (conversation_speakers, overlap_stats, plan_turns,
                                                       simulate_conversation, trim_silence)
from agencerdas.pipeline.simulate.espeak import SAMPLE_RATE_HZ, available_variants
from agencerdas.pipeline.simulate.speakers import FEMALE_VARIANTS, LANGUAGES, MALE_VARIANTS
from agencerdas.stores.errors import AgencerdasError

SHORT = dict(min_duration_s=8.0, max_duration_s=12.0)
MIXED = SimulationConfig(
    n_recordings=4, formats=("wav", "flac", "ogg", "mp3"), rates=(16000, 22050, 44100), stereo=True,
    noise_snr_db=20.0, reverb=True, seed=7, jobs=2, **SHORT,
)
CLEAN = SimulationConfig(n_recordings=3, formats=("wav",), rates=(22050, 16000), seed=3, **SHORT)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("mixed")
    return out, simulate_corpus(out, MIXED, progress=False)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("clean")
    return out, simulate_corpus(out, CLEAN, progress=False)


# --- eSpeak NG binding ------------------------------------------------------------------


def test_espeak_speaks_reproducibly_in_each_session() -> None:
    with Espeak() as tts:
        first = tts.synthesize("selamat pagi, apa kabar?", "id+f3", rate_wpm=160, pitch=40)
        # Carry-over state from earlier utterances changes the samples within a session...
        tts.synthesize("something else entirely", "en-us+m1")
    # ...but a new session starts from scratch.
    with Espeak() as tts:
        again = tts.synthesize("selamat pagi, apa kabar?", "id+f3", rate_wpm=160, pitch=40)
    assert first.dtype == np.int16 and first.size > 0.5 * SAMPLE_RATE_HZ
    assert np.array_equal(first, again)


@pytest.mark.parametrize("voice", ["xx-nope+m1", "en-us+nosuchvariant", "+m3"])
def test_espeak_rejects_unknown_voice(voice: str) -> None:
    with Espeak() as tts, pytest.raises(AgencerdasError, match=voice.replace("+", r"\+")):
        tts.synthesize("hello", voice)


def test_only_one_espeak_session_per_process() -> None:
    with Espeak(), pytest.raises(RuntimeError):
        Espeak()


def test_every_pool_language_and_variant_is_shipped_and_speaks() -> None:
    assert set(FEMALE_VARIANTS + MALE_VARIANTS) <= available_variants()
    with Espeak() as tts:
        for language in LANGUAGES:
            assert tts.synthesize("ya", f"{language}+{MALE_VARIANTS[0]}").size > 0


# --- speakers ---------------------------------------------------------------------------


def test_train_and_test_pools_are_disjoint_and_reproducible() -> None:
    pools = speaker_pools(pool_seed=5, train_size=40, test_size=12)
    train, test = pools["train"], pools["test"]
    assert (len(train), len(test)) == (40, 12)
    assert not {s.id for s in train} & {s.id for s in test}
    # Disjoint down to the timbre: no variant is in both pools.
    assert not {s.variant for s in train} & {s.variant for s in test}
    assert len({(s.voice, s.pitch, s.pitch_range, s.rate_wpm) for s in train}) == 40
    assert speaker_pools(pool_seed=5, train_size=40, test_size=12) == pools
    assert speaker_pool("test", pool_seed=5, train_size=40, test_size=12) == test
    assert speaker_pools(pool_seed=6)["train"] != speaker_pools(pool_seed=5)["train"]


# --- conversation -----------------------------------------------------------------------


def test_trim_silence_keeps_exactly_the_loud_part() -> None:
    samples = np.zeros(1000, dtype=np.int16)
    samples[100], samples[500], samples[700] = 30, 10000, -200
    trimmed = trim_silence(samples)
    assert trimmed[0] == 10000 and trimmed[-1] == -200 and trimmed.size == 201
    assert trim_silence(np.zeros(10, dtype=np.int16)).size == 0


def test_overlap_stats_counts_time_with_two_or_more_speakers() -> None:
    segments = [Segment(0.0, 4.0, "a"), Segment(3.0, 2.0, "b"), Segment(5.0, 1.0, "a"), Segment(8.0, 1.0, "c")]
    assert overlap_stats(segments) == pytest.approx((7.0, 1.0))


def test_turns_never_overlap_their_own_speaker() -> None:
    rng = np.random.default_rng(0)
    config = SimulationConfig(p_overlap=0.9, overlap_mean_s=3.0, p_same_speaker=0.3)

    def utterance(_speaker: int) -> np.ndarray:
        return np.ones(int(rng.integers(200, 4 * SAMPLE_RATE_HZ)), dtype=np.float32)

    turns = plan_turns(4, 600 * SAMPLE_RATE_HZ, config, rng, utterance)
    assert {t.speaker for t in turns} == {0, 1, 2, 3}
    assert all(t.start >= 0 for t in turns)
    for speaker in range(4):
        own = sorted((t.start, t.end) for t in turns if t.speaker == speaker)
        assert all(end <= next_start for (_, end), (next_start, _) in zip(own, own[1:]))
    assert max(t.end for t in turns) >= 600 * SAMPLE_RATE_HZ


def test_default_overlap_ratio_is_realistic() -> None:
    config = SimulationConfig(min_duration_s=180.0, max_duration_s=180.0, speakers_per_rec={3: 1.0})
    with Espeak() as tts:
        conversation = simulate_conversation(speaker_pool("train"), config, 0, tts, n_channels=1)
    speech, overlap = overlap_stats(conversation.segments)
    assert 0.03 < overlap / speech < 0.25
    assert len({s.speaker for s in conversation.segments}) == 3


# --- corpus -----------------------------------------------------------------------------


def test_written_formats_rates_and_channels_are_those_asked_for(mixed: tuple[Path, dict]) -> None:
    out, corpus = mixed
    assert json.loads((out / "corpus.json").read_text()) == corpus
    seen = set()
    for entry in corpus["recordings"]:
        info = sf.info(out / entry["audio"])
        assert Path(entry["audio"]).suffix == f".{entry['format']}"
        assert info.format == {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "mp3": "MP3"}[entry["format"]]
        assert (info.samplerate, info.channels) == (entry["sample_rate_hz"], entry["channels"])
        samples, rate = sf.read(out / entry["audio"], always_2d=True)
        assert rate == entry["sample_rate_hz"] and samples.shape[1] == entry["channels"]
        assert samples.shape[0] / rate == pytest.approx(entry["duration_s"], abs=0.01)
        seen.add((entry["format"], entry["sample_rate_hz"], entry["channels"]))
    assert {f for f, _, _ in seen} == {"wav", "flac", "ogg", "mp3"}
    assert {r for _, r, _ in seen} == {16000, 22050, 44100}
    assert {c for _, _, c in seen} == {1, 2}


def test_same_seed_gives_identical_corpus_whatever_the_jobs(mixed: tuple[Path, dict], tmp_path: Path) -> None:
    out, corpus = mixed
    again = simulate_corpus(tmp_path, replace(MIXED, jobs=1), progress=False)
    assert {k: v for k, v in again.items() if k != "config"} == {k: v for k, v in corpus.items() if k != "config"}
    for entry in corpus["recordings"]:
        for kind in ("rttm", "uem"):
            assert (tmp_path / entry[kind]).read_bytes() == (out / entry[kind]).read_bytes()
        first, second = (out / entry["audio"]).read_bytes(), (tmp_path / entry["audio"]).read_bytes()
        if entry["format"] == "ogg":
            # libsndfile gives each Ogg stream a random serial number: compare samples.
            assert np.array_equal(sf.read(out / entry["audio"])[0], sf.read(tmp_path / entry["audio"])[0])
        else:
            assert first == second


def test_corpus_metadata_is_consistent(mixed: tuple[Path, dict]) -> None:
    out, corpus = mixed
    pool_ids = {s["id"] for s in corpus["speakers"]}
    assert pool_ids == {s.id for s in speaker_pool("train")}
    for entry in corpus["recordings"]:
        segments = parse_rttm(out / entry["rttm"])[entry["id"]]
        assert {s.speaker for s in segments} == set(entry["speakers"]) <= pool_ids
        assert 2 <= len(entry["speakers"]) <= 4 and entry["n_utterances"] == len(segments)
        assert parse_uem(out / entry["uem"]) == {entry["id"]: [(0.0, entry["duration_s"])]}
        assert max(s.end for s in segments) < entry["duration_s"]
        assert entry["duration_s"] >= MIXED.min_duration_s
        assert len(entry["rt60_s"]) == len(entry["speakers"]) and entry["snr_db"] == 20.0
    assert corpus["overlap_ratio"] == pytest.approx(corpus["overlap_s"] / corpus["speech_s"], abs=1e-4)


def test_rttm_marks_exactly_where_speech_energy_is(clean: tuple[Path, dict]) -> None:
    out, corpus = clean
    assert {e["sample_rate_hz"] for e in corpus["recordings"]} == {22050, 16000}
    for entry in corpus["recordings"]:
        audio, rate = sf.read(out / entry["audio"])
        segments = parse_rttm(out / entry["rttm"])[entry["id"]]
        margin = int(0.02 * rate)  # RTTM times are rounded to 1 ms; resampling rings for a few ms
        edge = int(0.01 * rate)
        loud = 0.005 * np.abs(audio).max()
        inside = np.zeros(audio.size, dtype=bool)
        for segment in segments:
            start, end = round(segment.start * rate), round(segment.end * rate)
            inside[max(start - margin, 0) : end + margin] = True
            # A trimmed utterance is loud right at both of its ends.
            assert np.abs(audio[start : start + edge]).max() > loud
            assert np.abs(audio[end - edge : end]).max() > loud
        assert np.abs(audio[~inside]).max() < loud


def test_noise_and_reverb_leave_the_reference_unchanged(clean: tuple[Path, dict], tmp_path: Path) -> None:
    out, corpus = clean
    noisy = replace(CLEAN, noise_snr_db=5.0, reverb=True, n_recordings=1)
    entry = simulate_corpus(tmp_path, noisy, progress=False)["recordings"][0]
    assert (tmp_path / entry["rttm"]).read_bytes() == (out / entry["rttm"]).read_bytes()
    quiet, noisy_audio = sf.read(out / entry["audio"])[0], sf.read(tmp_path / entry["audio"])[0]
    segments = parse_rttm(tmp_path / entry["rttm"])[entry["id"]]
    silence = slice(0, round(segments[0].start * entry["sample_rate_hz"]) - 50)
    assert np.abs(quiet[silence]).max() == 0 and np.abs(noisy_audio[silence]).max() > 0


def test_regenerating_removes_files_of_the_previous_run(tmp_path: Path) -> None:
    config = SimulationConfig(n_recordings=2, formats=("flac", "wav"), **SHORT)
    simulate_corpus(tmp_path, config, progress=False)
    simulate_corpus(tmp_path, replace(config, n_recordings=1), progress=False)
    assert sorted(p.name for p in (tmp_path / "audio").iterdir()) == ["train_0001.flac"]
    assert sorted(p.name for p in (tmp_path / "rttm").iterdir()) == ["train_0001.rttm"]


def test_test_corpus_uses_only_test_speakers(tmp_path: Path) -> None:
    corpus = simulate_corpus(tmp_path, SimulationConfig(n_recordings=1, pool="test", **SHORT), progress=False)
    entry = corpus["recordings"][0]
    assert entry["id"] == "test_0001"
    assert set(entry["speakers"]) <= {s.id for s in speaker_pool("test")}
    assert not set(entry["speakers"]) & {s.id for s in speaker_pool("train")}


@pytest.mark.parametrize("seed", [1, 5])
def test_heldout_voices_speak_only_in_their_own_recordings(seed: int) -> None:
    config = SimulationConfig(n_recordings=135, heldout_voices=6, seed=seed)
    pool = speaker_pool("train")
    held_voices, other_voices = {s.id for s in pool[-6:]}, {s.id for s in pool[:-6]}
    held = config.heldout_recordings()
    assert len(held) == round(135 * 6 / 40) and held == SimulationConfig(n_recordings=135, heldout_voices=6,
                                                                          seed=seed).heldout_recordings()
    spoken_by_held = set()
    for index in range(135):
        cast = {s.id for s in conversation_speakers(pool, config, index)}
        assert cast <= (held_voices if index in held else other_voices)
        spoken_by_held |= cast if index in held else set()
    assert spoken_by_held == held_voices  # each held-out voice is heard, and only there
    assert held != SimulationConfig(n_recordings=135, heldout_voices=6, seed=seed + 1).heldout_recordings()


def test_no_heldout_voices_draws_from_the_whole_pool_as_before() -> None:
    pool = speaker_pool("train")
    config = SimulationConfig(n_recordings=50, seed=3)
    assert config.heldout_recordings() == frozenset() and config.voices_of(pool, 0) == pool
    heard = {s.id for index in range(50) for s in conversation_speakers(pool, config, index)}
    assert heard & {s.id for s in pool[-6:]} and heard & {s.id for s in pool[:-6]}


def test_small_corpus_with_heldout_voices_names_them(tmp_path: Path) -> None:
    config = SimulationConfig(n_recordings=3, heldout_voices=2, speakers_per_rec={2: 1.0}, seed=4, **SHORT)
    corpus = simulate_corpus(tmp_path, config, progress=False)
    held = set(corpus["heldout_speakers"])
    assert held == {s.id for s in speaker_pool("train")[-2:]} and corpus["config"]["heldout_voices"] == 2
    rttm_speakers = [{seg.speaker for seg in parse_rttm(tmp_path / entry["rttm"])[entry["id"]]}
                     for entry in corpus["recordings"]]
    assert sorted(speakers == held for speakers in rttm_speakers) == [False, False, True]
    assert all(speakers == held or not speakers & held for speakers in rttm_speakers)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"heldout_voices": 3}, r"heldout_voices=3: conversations with up to 4 speakers need at least 4 held-out"),
        ({"heldout_voices": 37}, "heldout_voices=37"),
        ({"heldout_voices": -1}, r"heldout_voices \(--heldout-voices\) must be a whole number >= 0"),
        ({"heldout_voices": 6, "n_recordings": 1}, "at least 2 recordings"),
        ({"pool": "test", "test_pool_size": 3, "speakers_per_rec": {2: 0.5, 4: 0.5}}, "at least 4 speakers"),
        ({"formats": ("wav", "aac")}, "unknown audio format 'aac'"),
        ({"rates": (16000, 0)}, "sample rate 0"),
        ({"rates": (-8000,)}, "sample rate -8000"),
        ({"formats": ("mp3",), "rates": (96000,)}, "mp3 cannot store 96000 Hz"),
        ({"min_duration_s": 30.0, "max_duration_s": 10.0}, "min_duration_s"),
        ({"pool": "dev"}, "pool must be one of"),
        ({"n_recordings": 0}, "n_recordings"),
        ({"p_overlap": 1.5}, "p_overlap"),
        ({"speakers_per_rec": {0: 1.0}}, "speakers_per_rec"),
        ({"speakers_per_rec": {2: 1e308, 3: 1e308}}, "positive, finite sum"),
        ({"speakers_per_rec": {2: float("inf")}}, "finite numbers >= 0"),
        ({"speakers_per_rec": {2: "1"}}, "finite numbers >= 0"),
        ({"rates": (1,)}, r"sample rate 1 \(--rates\) must be an integer number of Hz from 8000"),
        ({"min_duration_s": 10.0, "max_duration_s": 1e300}, r"max_duration_s \(--max-duration\) 1e\+300 s is above"),
    ],
)
def test_impossible_requests_are_rejected(overrides: dict, message: str) -> None:
    with pytest.raises(AgencerdasError, match=message):
        SimulationConfig(**overrides)
