"""What a features run accepts: request values checked before the store is touched, and inputs that
pass decoding but would commit wrong data (features out of range, annotations counted twice)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from agencerdas.pipeline import FeaturesRequest, build_features
from agencerdas.pipeline.rttm import format_rttm
from agencerdas.stores import Store, load_view
from agencerdas.stores.errors import AgencerdasError
from tests.builders import conversation, make_corpus


def test_request_values_are_checked_together_before_the_store_is_touched(tmp_path):
    audio, rttm = make_corpus(tmp_path / "corpus", n=1, seconds=1.0)
    store = tmp_path / "store"
    with pytest.raises(AgencerdasError) as info:
        FeaturesRequest(audio, str(store), rttm_dir=rttm, validation_fraction=float("nan"), split_seed=-1, jobs=0)
    message = str(info.value)
    assert message.startswith("invalid features request: ") and message.endswith("nothing was written")
    for words in ("validation_fraction (--validation-fraction) must be in [0, 1), got nan",
                  "split_seed (--split-seed) must be a whole number >= 0, got -1", "--jobs must be at least 1, got 0"):
        assert words in message, message
    for fraction in (1.0, -0.1, float("inf"), True):
        with pytest.raises(AgencerdasError, match="validation_fraction"):
            FeaturesRequest(audio, str(store), validation_fraction=fraction)
    with pytest.raises(AgencerdasError, match="split_seed"):
        FeaturesRequest(audio, str(store), split_seed=1.5)
    assert not store.exists()


def test_a_missing_annotation_directory_is_an_error_not_an_unlabelled_corpus(tmp_path):
    """A typo in --rttm-dir used to rewrite the view with every recording unlabelled."""
    audio, rttm = make_corpus(tmp_path / "corpus", n=1, seconds=1.0)
    store = tmp_path / "store"
    typo = tmp_path / "corpus" / "rtm"
    with pytest.raises(AgencerdasError, match=rf"RTTM directory \(--rttm-dir\) {typo} is not an existing directory"):
        FeaturesRequest(audio, str(store), rttm_dir=typo)
    with pytest.raises(AgencerdasError, match=r"UEM directory \(--uem-dir\) .*a.rttm is not an existing directory"):
        FeaturesRequest(audio, str(store), rttm_dir=rttm, uem_dir=rttm / "a.rttm")
    with pytest.raises(AgencerdasError, match=r"audio directory \(AUDIO_DIR\)"):
        FeaturesRequest(tmp_path / "nowhere", str(store))
    assert not store.exists()


def test_out_of_range_audio_and_doubled_annotations_fail_by_name_and_the_rest_is_committed(tmp_path):
    audio, rttm = make_corpus(tmp_path / "corpus", n=3, seconds=2.0)
    samples = np.full(16000, 1e30, dtype=np.float32)  # finite: it passed decoding and gave NaN features
    sf.write(audio / "huge.wav", samples, 16000, subtype="FLOAT")
    # A corpus-wide RTTM beside the per-recording ones, naming rec01 again, with an info line.
    (rttm / "all.rttm").write_text("SPKR-INFO rec01 1 <NA> <NA> <NA> unknown alice <NA> <NA>\n"
                                   + format_rttm("rec01", conversation(1, 2.0)))
    summary = build_features(FeaturesRequest(audio, str(tmp_path / "store"), rttm_dir=rttm, progress=False))

    failures = dict(summary.failures)
    assert set(failures) == {str(audio / "huge.wav"), str(audio / "rec01.flac")}, summary.format()
    assert failures[str(audio / "huge.wav")].startswith("samples reach 1e+30, far beyond full scale ±1")
    assert f"({rttm / 'all.rttm'}, {rttm / 'rec01.rttm'})" in failures[str(audio / "rec01.flac")]
    assert (str(rttm / "all.rttm"), "1 non-SPEAKER line(s) skipped (SPKR-INFO x1)") in summary.notes
    report = summary.format()
    assert "huge.wav" in report and "far beyond full scale" in report and "more than one RTTM file" in report

    store = Store(tmp_path / "store", create=False)
    assert store.verify().ok and len(store.keys("features")) == 2  # nothing was committed for either
    assert sorted(load_view(store, "default").recordings) == ["rec00", "rec02"]
