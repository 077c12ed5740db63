"""A view whose corpus declares its splits trains on its train subset, selects on its development subset, and
corpus-stats.txt says the corpus made the split."""

from __future__ import annotations

from agencerdas.pipeline.corpora import CorpusSource
from agencerdas.pipeline.runner import FeaturesRequest, build_features
from tests.conftest import TINY
from tests.corpora import PROTOCOL, tone_corpus, write_protocol


def test_training_keeps_the_protocols_subsets_and_says_so(tmp_path):
    recs = tone_corpus(tmp_path / "tones", n=4, seconds=12.0)
    yml = write_protocol(tmp_path / "db", recs, {"train": ["rec00", "rec01", "rec03"], "development": ["rec02"]})
    assert build_features(FeaturesRequest(None, str(tmp_path / "store"), progress=False, jobs=1,
                                          corpus=CorpusSource(protocol=PROTOCOL, database_yml=yml))).ok
    from agencerdas.training.config import resolve
    from agencerdas.training.loop import train

    history = train(resolve("optimized", [*TINY, "EPOCHS=1"]), str(tmp_path / "store"), "default", tmp_path / "run",
                    progress=False)

    assert history[-1]["train_recordings"] == 3  # the train subset, whatever a seeded split would have drawn
    stats = (tmp_path / "run" / "corpus-stats.txt").read_text()
    assert (f"split declared by the corpus (pyannote.database protocol {PROTOCOL}: train -> train (3), development "
            "-> validation (1))") in stats
