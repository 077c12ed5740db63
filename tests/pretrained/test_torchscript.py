"""A user's TorchScript encoder plugs in as a SpeakerEncoder; a file that is not one is refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agencerdas.pipeline.simulate.tones import voiced
from agencerdas.pretrained import SpeakerEncoder, TorchScriptEncoder, load_encoder
from agencerdas.stores.errors import AgencerdasError


class BandEnergies(torch.nn.Module):
    """A tiny encoder: log energy of 25 ms frames in 12 fixed random projections, averaged over time."""

    def __init__(self):
        super().__init__()
        self.register_buffer("bands", torch.randn(400, 12, generator=torch.Generator().manual_seed(0)))

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        frames = waveforms.unfold(1, 400, 160)  # (B, T, 400)
        return torch.log((frames @ self.bands).square() + 1e-6).mean(dim=1) + 20.0  # (B, 12)


class Returns(torch.nn.Module):
    """An encoder whose output is wrong in a given way."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        if self.kind == "vector":
            return waveforms.mean(dim=1)  # (B,)
        if self.kind == "nan":
            return waveforms[:, :4] * float("nan")
        return waveforms[:, :4].reshape(2, -1)  # (2, 2B): the batch size not kept


def _save(module: torch.nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(module), str(path))
    return path


def _unit(x: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(x, dim=-1).numpy()


@pytest.fixture
def plug(tmp_path) -> tuple[TorchScriptEncoder, BandEnergies]:
    module = BandEnergies()
    return load_encoder(_save(module, tmp_path / "bands.pt")), module


def _tone(seconds: float, f0: float) -> np.ndarray:
    return voiced(f0, seconds, 16000, np.random.default_rng(int(f0)))


def test_plugged_encoder_embeds_with_the_documented_rules(plug):
    encoder, module = plug
    assert isinstance(encoder, SpeakerEncoder) and encoder.dim == 12 and encoder.sample_rate == 16000
    plain, short, long = _tone(1.5, 150.0), _tone(0.2, 220.0), _tone(24.0, 330.0)
    out = encoder.embed([plain, short, long, plain])
    assert out.shape == (4, 12) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    with torch.inference_mode():
        # Within the limits: the module on the waveform itself.
        np.testing.assert_allclose(out[0], _unit(module(torch.from_numpy(plain)[None]))[0], atol=1e-5)
        # Shorter than 0.5 s: repeated end to end up to 0.5 s.
        np.testing.assert_allclose(out[1], _unit(module(torch.from_numpy(np.resize(short, 8000))[None]))[0], atol=1e-5)
        # Longer than 10 s: three equal pieces of 8 s, their unit embeddings averaged.
        pieces = _unit(module(torch.from_numpy(long).reshape(3, -1)))
        np.testing.assert_allclose(out[2], _unit(torch.from_numpy(pieces.mean(axis=0))), atol=1e-5)
    np.testing.assert_allclose(out[3], out[0], atol=1e-6)


def test_batches_give_the_one_by_one_vectors(plug):
    encoder, _ = plug
    waves = [_tone(seconds, 100.0 + 40 * i) for i, seconds in enumerate([1.5, 1.5, 0.3, 1.5, 12.0, 2.0, 1.5])]
    encoder.batch_size = 2
    batched = encoder.embed(waves)
    one_by_one = np.concatenate([encoder.embed([wave]) for wave in waves])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_files_that_are_not_encoders_are_refused_by_name(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    weights = tmp_path / "state_dict.pt"
    torch.save(BandEnergies().state_dict(), weights)
    for path, message in [
        (text, "not a TorchScript file"),
        (weights, "not a TorchScript file"),
        (_save(Returns("vector"), tmp_path / "vector.pt"), r"returned \(2,\) for a \(2, 16000\) waveform batch; expected \(2, E\)"),
        (_save(Returns("nan"), tmp_path / "nan.pt"), "non-finite"),
        (tmp_path / "missing.pt", "no such file"),
    ]:
        with pytest.raises(AgencerdasError, match=message) as caught:
            load_encoder(path)
        assert str(path) in str(caught.value)


def test_output_that_loses_the_batch_is_refused_by_name(tmp_path):
    path = _save(Returns("batch"), tmp_path / "batch.pt")
    encoder = load_encoder(path)  # (2, 4) for the (2, 16000) check batch passes
    with pytest.raises(AgencerdasError, match=r"returned \(2, 6\) for 3 waveforms of 16000 samples; expected \(3, 4\)") as caught:
        encoder.embed([_tone(1.0, 150.0)] * 3)
    assert str(path) in str(caught.value)
