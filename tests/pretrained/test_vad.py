"""The project's Silero VAD gives the TorchScript model's probabilities, in blocks, and silero's regions."""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from agencerdas.pretrained import SileroVAD, SpeechRules, regions_from_probabilities
from agencerdas.pretrained import vad as vad_module
from agencerdas.pretrained.files import package_file
from agencerdas.stores.errors import AgencerdasError


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD.load()


@pytest.fixture(scope="module")
def silero_utils():
    """silero's ``utils_vad`` module, loaded from its file: importing the ``silero_vad`` package would
    run its ``__init__``, which sets torch's thread count for the whole test process. Its top-level
    ``import torchaudio`` serves only its audio I/O; the project installs silero-vad without it, so a
    stand-in module takes its place while the file loads (``get_speech_timestamps`` never uses it)."""
    path = package_file("silero_vad", "utils_vad.py", vad_module.INSTALL)
    spec = importlib.util.spec_from_file_location("silero_utils_vad", path)
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "torchaudio", types.ModuleType("torchaudio"))
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dialogue(speech) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Two sentences with 1 s of silence before, 1.5 s of faint noise between and 1 s after; the spans
    (seconds) where the sentences' samples lie."""
    rng = np.random.default_rng(0)
    first, second = speech[("en-us+m3", 0)], speech[("en-us+f3", 1)]
    gap = (0.001 * rng.standard_normal(24000)).astype(np.float32)
    wave = np.concatenate([np.zeros(16000, np.float32), first, gap, second, np.zeros(16000, np.float32)])
    start2 = 16000 + len(first) + len(gap)
    return wave, [(1.0, (16000 + len(first)) / 16000), (start2 / 16000, (start2 + len(second)) / 16000)]


def test_probabilities_equal_the_torchscript_models(vad, dialogue):
    wave = dialogue[0][:100_000]  # 196 frames, the last one partial
    scripted = torch.jit.load(str(package_file("silero_vad", "data/silero_vad.jit", "pip install silero-vad")))
    with torch.inference_mode():
        expected = scripted.audio_forward(torch.from_numpy(wave)[None], 16000)[0].numpy()
    probs = vad.speech_probability(wave)
    assert probs.shape == (196,) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, expected, atol=1e-4)


def test_blocks_give_the_whole_pass(dialogue):
    wave = dialogue[0]
    whole = SileroVAD.load(block_frames=10_000).speech_probability(wave)
    blocks = SileroVAD.load(block_frames=7).speech_probability(wave)
    assert len(whole) == -(-len(wave) // 512)
    np.testing.assert_allclose(blocks, whole, atol=1e-5)


def test_speech_found_where_the_sentences_are(vad, dialogue):
    wave, truth = dialogue
    regions = vad.speech_regions(wave)
    assert regions, "no speech found in two spoken sentences"
    voiced = sum(min(e, te) - max(s, ts) for s, e in regions for ts, te in truth if min(e, te) > max(s, ts))
    found = sum(e - s for s, e in regions)
    spoken = sum(e - s for s, e in truth)
    # eSpeak's output includes its own short pauses, so found speech lies inside the sentences
    # and covers most of them, and the silence and noise around them stay unmarked.
    assert voiced / found > 0.95 and voiced / spoken > 0.7
    assert regions[0][0] > 0.9 and regions[-1][1] < len(wave) / 16000 - 0.9


def test_no_speech_in_silence_or_faint_noise(vad):
    rng = np.random.default_rng(1)
    assert vad.speech_regions(np.zeros(5 * 16000, np.float32)) == []
    assert vad.speech_regions((0.003 * rng.standard_normal(5 * 16000)).astype(np.float32)) == []
    assert vad.speech_probability(np.zeros(0, np.float32)).shape == (0,)


@pytest.mark.parametrize(
    "rules",
    [SpeechRules(), SpeechRules(threshold=0.3, min_speech_s=0.1, min_silence_s=0.3, speech_pad_s=0.2), SpeechRules(neg_threshold=0.45)],
)
def test_regions_follow_silero_get_speech_timestamps(silero_utils, rules):
    rng = np.random.default_rng(2)
    compared = 0
    for _ in range(20):
        # Runs of 1-24 frames at random levels, dithered: speech and silence of varied lengths, and
        # probabilities crossing both thresholds.
        levels = np.repeat(rng.random(60), rng.integers(1, 25, 60))
        probs = np.clip(levels + 0.1 * rng.standard_normal(len(levels)), 0.0, 1.0)
        n_samples = len(probs) * 512 - int(rng.integers(0, 512))
        expected = silero_utils.get_speech_timestamps_from_probs(
            probs.tolist(), threshold=rules.threshold, neg_threshold=rules.neg_threshold,
            min_speech_duration_ms=rules.min_speech_s * 1000, min_silence_duration_ms=rules.min_silence_s * 1000,
            speech_pad_ms=rules.speech_pad_s * 1000, audio_length_samples=n_samples,
        )
        got = regions_from_probabilities(probs, n_samples, rules)
        want = [(r["start"] / 16000, r["end"] / 16000) for r in expected]
        np.testing.assert_allclose(np.reshape(got, (-1, 2)), np.reshape(want, (-1, 2)), atol=1e-9)
        compared += len(want)
    assert compared > 40


def test_damaged_or_foreign_model_file_says_to_reinstall(tmp_path, monkeypatch):
    garbage, foreign = tmp_path / "garbage.jit", tmp_path / "foreign.jit"
    garbage.write_bytes(b"not a model")
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 1)), str(foreign))  # TorchScript, but not Silero's
    for path in (garbage, foreign):
        monkeypatch.setattr(vad_module, "package_file", lambda *args, path=path: path)
        with pytest.raises(AgencerdasError, match=r"not the Silero VAD 6 TorchScript model .*reinstall it with `pip install --no-deps 'silero-vad") as caught:
            SileroVAD.load()
        assert str(path) in str(caught.value)
