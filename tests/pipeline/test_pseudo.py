"""Pseudo labels for recordings without RTTM: quality against withheld truth, and the pseudo flag."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import FeaturesRequest, build_features
from pipeline.pseudo import PseudoConfig, pseudo_labels, speech_activity
from pipeline.rttm import parse_rttm
from stores import Store, load_view
from stores.errors import AgencerdasError
from tests.builders import make_corpus
from scoring.der import DERSettings, score
from scoring.binarize import activity_to_segments

#: Stated quality of the method on the tone corpus (pyannote.metrics DER, 0.25 s collar, overlap scored).
MAX_PSEUDO_DER = 0.25


@pytest.fixture(scope="module")
def pseudo_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("pseudo")
    audio, rttm = make_corpus(root / "corpus", n=3, seconds=30.0, formats=("wav",), rates=(16000,))
    truth = {rec: segs for path in rttm.glob("*.rttm") for rec, segs in parse_rttm(path).items()}
    # RTTMs withheld: the features run sees only audio.
    summary = build_features(FeaturesRequest(audio_dir=audio, store=str(root / "store"), pseudo_labels=True,
                                             progress=False))
    return Store(root / "store", create=False), truth, summary


def test_pseudo_labels_reach_stated_der_against_withheld_truth(pseudo_store):
    store, truth, summary = pseudo_store
    assert summary.ok and summary.computed == 3
    view = load_view(store, "default")
    hypotheses = {}
    for rec, entry in view.recordings.items():
        activity = np.asarray(store.open("labels", entry.labels)["labels"][:]).astype(bool)
        hypotheses[rec] = activity_to_segments(activity, 0.01)
    report = score(truth, hypotheses, None, DERSettings(collar_s=0.25))
    assert report.overall["der"] < MAX_PSEUDO_DER, report.table()


def test_pseudo_flag_propagates_to_entry_and_view(pseudo_store):
    store, _, _ = pseudo_store
    view = load_view(store, "default")
    assert all(entry.pseudo for entry in view.recordings.values())
    for entry in view.recordings.values():
        attrs = store.attrs("labels", entry.labels)
        assert attrs["pseudo"] is True and attrs["pseudo_method"]["method"] == "energy-vad+stats-ahc"
    # Pseudo-labelled recordings are never held out for validation (it is scored against references).
    assert view.split("validation") == []


def test_pseudo_key_differs_from_annotated_key_and_method_settings(tmp_path):
    audio, rttm = make_corpus(tmp_path / "corpus", n=1, seconds=6.0, formats=("wav",), rates=(16000,))
    annotated = build_features(FeaturesRequest(audio_dir=audio, rttm_dir=rttm, store=str(tmp_path / "s"), progress=False))
    pseudo = build_features(FeaturesRequest(audio_dir=audio, store=str(tmp_path / "s"), view="p", pseudo_labels=True,
                                            progress=False))
    store = Store(tmp_path / "s", create=False)
    a, p = load_view(store, "default").recordings["rec00"], load_view(store, "p").recordings["rec00"]
    assert annotated.ok and pseudo.ok and pseudo.labels_only == 1  # features reused
    assert a.features == p.features and a.labels != p.labels and not a.pseudo and p.pseudo


def test_silence_has_no_speech_and_is_rejected():
    silence = np.full((500, 80), -23.0, dtype=np.float32)
    assert not speech_activity(silence, PseudoConfig()).any()
    with pytest.raises(AgencerdasError, match="no speech"):
        pseudo_labels(silence, PseudoConfig())
