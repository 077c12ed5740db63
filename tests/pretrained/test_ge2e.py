"""The project's GE2E encoder gives resemblyzer's own embeddings, batched, from the wheel's weights."""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from agencerdas.pipeline.simulate.tones import voiced
from agencerdas.pretrained import GE2E, SpeakerEncoder, load_encoder
from agencerdas.pretrained import ge2e
from agencerdas.pretrained.ge2e import partial_starts
from agencerdas.stores.errors import AgencerdasError


@pytest.fixture(scope="module")
def encoder() -> GE2E:
    return GE2E.load()


@pytest.fixture(scope="module")
def resemblyzer():
    """The resemblyzer package itself, the reference. Its import needs ``webrtcvad`` (for silence
    trimming, unused here), a C extension that is absent or fails to import (it needs setuptools'
    ``pkg_resources``) on some installs: then a stand-in module takes its place for this import."""
    with pytest.MonkeyPatch.context() as patch:
        try:
            import webrtcvad  # noqa: F401
        except ImportError:
            patch.setitem(sys.modules, "webrtcvad", types.ModuleType("webrtcvad"))
        import resemblyzer

        yield resemblyzer


def _tone(seconds: float, f0: float = 180.0, seed: int = 0) -> np.ndarray:
    return voiced(f0, seconds, 16000, np.random.default_rng(seed))


def test_embeddings_match_resemblyzer_embed_utterance(encoder, resemblyzer, speech):
    reference = resemblyzer.VoiceEncoder("cpu", verbose=False)
    # Speech of several partials, and tones shorter than one partial, of exactly one, and of a
    # length whose last partial the 75 % coverage rule drops (3.3 s) or keeps (3.5 s).
    waves = [*speech.values(), _tone(0.4), _tone(1.6), _tone(3.3, 120.0), _tone(3.5, 300.0)]
    ours = encoder.embed(waves)
    for wave, embedding in zip(waves, ours):
        assert float(embedding @ reference.embed_utterance(wave)) >= 0.9999


def test_quiet_input_is_raised_to_minus_30_dbfs_as_resemblyzer_preprocesses(encoder, resemblyzer, speech):
    reference = resemblyzer.VoiceEncoder("cpu", verbose=False)
    quiet = 0.02 * speech[("en-us+m3", 0)]  # about -54 dBFS
    expected = reference.embed_utterance(resemblyzer.audio.normalize_volume(quiet, -30, increase_only=True))
    assert float(encoder.embed([quiet])[0] @ expected) >= 0.9999


def test_partials_follow_resemblyzer_slicing(resemblyzer):
    for n_samples in [0, 1, 159, 16000, 25599, 25600, 25601, 30000, 52000, 52001, 160000, 333333]:
        _, mel_slices = resemblyzer.VoiceEncoder.compute_partial_slices(n_samples, rate=1.3, min_coverage=0.75)
        assert partial_starts(n_samples) == [s.start for s in mel_slices]


def test_unit_vectors_of_shape_n_by_256(encoder):
    waves = [_tone(seconds, 100.0 + 50 * i) for i, seconds in enumerate([0.3, 1.0, 2.5, 7.0])] + [np.zeros(8000, np.float32)]
    out = encoder.embed(waves)
    assert isinstance(encoder, SpeakerEncoder) and encoder.dim == 256 and encoder.sample_rate == 16000
    assert out.shape == (5, 256) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert encoder.embed([]).shape == (0, 256)


def test_batches_across_inputs_give_the_one_by_one_vectors(speech):
    waves = [*speech.values(), _tone(0.5), _tone(5.0, 250.0)]
    small_batches = GE2E.load(batch_size=3).embed(waves)  # partials of one input split across batches
    one_by_one = np.concatenate([GE2E.load(batch_size=1).embed([wave]) for wave in waves])
    np.testing.assert_allclose(small_batches, one_by_one, atol=1e-5)


def test_same_voice_closer_than_another_voice(encoder, speech):
    e = dict(zip(speech, encoder.embed(list(speech.values()))))
    same = min(e[(v, 0)] @ e[(v, 1)] for v in ("en-us+m3", "en-us+f3"))
    other = max(e[("en-us+m3", i)] @ e[("en-us+f3", j)] for i in (0, 1) for j in (0, 1))
    assert same > other + 0.1


def test_load_encoder_names_ge2e(encoder):
    loaded = load_encoder("ge2e")
    assert isinstance(loaded, GE2E)
    wave = _tone(2.0)
    np.testing.assert_allclose(loaded.embed([wave]), encoder.embed([wave]), atol=1e-6)


def test_missing_package_says_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "resemblyzer" else real(name, *a))
    with pytest.raises(AgencerdasError, match=r"'resemblyzer' is not installed; run `pip install --no-deps resemblyzer"):
        GE2E.load()


def test_damaged_weights_file_says_to_reinstall(tmp_path, monkeypatch):
    garbage, foreign, renamed = tmp_path / "garbage.pt", tmp_path / "foreign.pt", tmp_path / "renamed.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    torch.save({"weights": torch.zeros(3)}, foreign)  # no model_state
    torch.save({"model_state": {"lstm.weight": torch.zeros(3)}}, renamed)  # not the encoder's parameters
    for path in (garbage, foreign, renamed):
        monkeypatch.setattr(ge2e, "package_file", lambda *args, path=path: path)
        with pytest.raises(AgencerdasError, match=r"not resemblyzer's GE2E weights .*reinstall it with `pip install") as caught:
            GE2E.load()
        assert str(path) in str(caught.value)
