"""Shared fixtures: every test gets its own stat cache directory (the pipeline writes one there), and
the trainer, inference and bench tests share ``toy``, a tiny labelled store that can train on itself.

The toy corpus is learnable: each speaker is a voiced tone of its own pitch, so who
speaks when is audible in the log-mel features. Six recordings of 12 s give a
view of five train recordings and one validation recording (1200 base frames each).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from agencerdas.pipeline.runner import FeaturesRequest, build_features
from agencerdas.stores import DatasetView, Store, load_view
from tests.builders import make_corpus

#: Overrides that shrink any preset to a model and data plan that trains in well under a second per epoch.
#: EMBEDDINGS=head: the toy corpora are tones, which a speaker encoder trained on speech does not tell apart; the
#: encoder's path is tested on speech (tests/inference/test_voices.py, test_pretrained.py, tests/pretrained).
TINY = ["DIM=16", "BLOCKS=1", "HEADS=2", "WINDOW=40", "BATCH=4", "NUM_WORKERS=0", "DER_EVERY=0", "DEVICE=cpu",
        "EMBEDDINGS=head"]


@dataclass
class ToyStore:
    url: str
    view: DatasetView
    tiny = TINY

    @property
    def store(self) -> Store:
        return Store(self.url, create=False)

    def recordings(self, part: str = "train"):
        return [self.view.recordings[r] for r in self.view.split(part)]

    @staticmethod
    def config(*overrides: str, preset: str = "optimized"):
        """``preset`` shrunk by TINY, then ``overrides`` (a ``TrainConfig``; torch is imported only here)."""
        from agencerdas.training.config import resolve

        return resolve(preset, [*TINY, *overrides])

    def train(self, out: Path, *overrides: str, preset: str = "optimized", resume: bool = False) -> list[dict]:
        """Train ``config(*overrides, preset=preset)`` into ``out``; the per-epoch records."""
        from agencerdas.training.loop import train

        return train(self.config(*overrides, preset=preset), self.url, "default", out, resume=resume, progress=False)


@pytest.fixture(scope="session")
def toy(tmp_path_factory) -> ToyStore:
    """Built once per session (in-process, one job) and only read by the tests."""
    root = tmp_path_factory.mktemp("toy")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AGENCERDAS_CACHE_DIR", str(root / "cache"))
        audio, rttm = make_corpus(root / "corpus", n=6, seconds=12.0)
        summary = build_features(FeaturesRequest(audio, str(root / "store"), rttm_dir=rttm, jobs=1, progress=False))
    assert summary.ok, summary.format()
    view = load_view(Store(root / "store", create=False), "default")
    assert len(view.split("train")) == 5 and len(view.split("validation")) == 1
    return ToyStore(str(root / "store"), view)


@pytest.fixture(autouse=True)
def _isolated_cache_dir(tmp_path_factory, monkeypatch):
    """Point ``AGENCERDAS_CACHE_DIR`` at a fresh tmp dir so no test reads or writes ~/.cache."""
    monkeypatch.setenv("AGENCERDAS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
