"""`features --pseudo-model`: pseudo labels from a trained model are its diarization, flagged and keyed by it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agencerdas.pipeline import FeatureConfig
from agencerdas.pipeline.rttm import parse_rttm
from agencerdas.stores import Store, load_view
from agencerdas.stores.errors import AgencerdasError
from tests.builders import make_corpus
from agencerdas.cli import main
from agencerdas.inference.diarize import diarize
from agencerdas.inference.pseudo_model import METHOD, ModelLabeler


@pytest.fixture(scope="module")
def checkpoints(toy, tmp_path_factory) -> tuple[Path, Path]:
    """Two checkpoints of one toy run: after 6 and after 7 epochs."""
    out = tmp_path_factory.mktemp("pseudo-model-run")
    toy.train(out, "EPOCHS=6")
    first = out / "six.pt"
    first.write_bytes((out / "last.pt").read_bytes())
    toy.train(out, "EPOCHS=7", resume=True)
    return first, out / "last.pt"


def _features(audio: Path, store: Path, *flags: str) -> int:
    return main(["features", str(audio), "--store", str(store), "--jobs", "1", "--quiet", *flags])


def _columns(activity: np.ndarray) -> set[bytes]:
    """The non-empty speaker columns of (frames, S) activity, as an order-free set."""
    return {activity[:, c].astype(bool).tobytes() for c in range(activity.shape[1]) if activity[:, c].any()}


def test_model_pseudo_labels_are_the_models_diarization_flagged_and_keyed_by_its_checkpoint(checkpoints, tmp_path):
    six, _ = checkpoints
    audio, _ = make_corpus(tmp_path / "corpus", n=2, seconds=12.0)  # RTTMs withheld
    assert _features(audio, tmp_path / "store", "--pseudo-model", str(six)) == 0
    store = Store(tmp_path / "store", create=False)
    view = load_view(store, "default")
    labeler = ModelLabeler(six, FeatureConfig().to_dict())
    assert labeler.describe()["method"] == METHOD
    diarize(sorted(audio.iterdir()), six, tmp_path / "rttm", device="cpu")
    for rec_id, rec in view.recordings.items():
        assert rec.pseudo
        group = store.open("labels", rec.labels)
        assert group.attrs["pseudo"] and group.attrs["pseudo_method"] == labeler.describe()
        stored = np.asarray(group["labels"][:])
        # The same turns as `diarize` writes for the file, at 10 ms resolution.
        expected = np.zeros((rec.frames, 4), bool)
        turns = parse_rttm(tmp_path / "rttm" / f"{rec_id}.rttm").get(rec_id, [])
        for column, speaker in enumerate(sorted({t.speaker for t in turns})):
            for t in (t for t in turns if t.speaker == speaker):
                expected[round(t.start * 100) : round(t.end * 100), column] = True
        assert _columns(stored) == _columns(expected) and stored.any()


def test_labels_follow_the_checkpoint_and_the_features_are_reused(checkpoints, tmp_path):
    six, seven = checkpoints
    audio, _ = make_corpus(tmp_path / "corpus", n=2, seconds=12.0)
    store_path = tmp_path / "store"
    keys = {}
    for name, flags in [("six", ["--pseudo-model", str(six)]), ("seven", ["--pseudo-model", str(seven)]),
                        ("energy", ["--pseudo-labels"]), ("six-again", ["--pseudo-model", str(six)])]:
        assert _features(audio, store_path, "--view", name, *flags) == 0
        keys[name] = {r: (e.features, e.labels) for r, e in load_view(Store(store_path, create=False), name).recordings.items()}
    features = {name: {r: k[0] for r, k in entries.items()} for name, entries in keys.items()}
    labels = {name: {r: k[1] for r, k in entries.items()} for name, entries in keys.items()}
    assert features["six"] == features["seven"] == features["energy"] == features["six-again"]
    assert labels["six"] == labels["six-again"]
    assert len({tuple(sorted(v.values())) for v in labels.values()}) == 3  # six, seven, energy: three label sets


def test_a_missing_checkpoint_or_other_features_is_a_clear_error(checkpoints, tmp_path):
    six, _ = checkpoints
    with pytest.raises(AgencerdasError, match="does not exist"):
        ModelLabeler(tmp_path / "nope.pt", FeatureConfig().to_dict())
    with pytest.raises(AgencerdasError, match="was trained on features"):
        ModelLabeler(six, FeatureConfig(n_mels=40).to_dict())
