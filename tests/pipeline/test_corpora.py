"""Corpus descriptions in: every format gives the recordings, turns and UEMs the audio-directory path gives on
the same files, declared splits make the view's split, and the same audio reuses the same store entries."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from agencerdas.pipeline.audio import stream_mono
from agencerdas.pipeline.corpora import CorpusSource
from agencerdas.pipeline.runner import FeaturesRequest, build_features
from agencerdas.stores import Store, feature_key, hash_file, load_view
from tests.corpora import (PROTOCOL, records, tone_corpus, write_cuts, write_jsonl, write_kaldi, write_lhotse,
                           write_nemo, write_protocol, long_file)


@pytest.fixture(scope="module")
def recs(tmp_path_factory):
    return tone_corpus(tmp_path_factory.mktemp("tones"), n=4)


def _protocol(root, recs):
    yml = write_protocol(root, recs, {"train": [r.rec_id for r in recs]})
    return CorpusSource(protocol=PROTOCOL, database_yml=yml)


def _lhotse(root, recs):
    return CorpusSource(manifests=[str(p) for p in write_lhotse(root, recs)])


def _lhotse_gz(root, recs):
    paths = []
    for path in write_lhotse(root, recs):
        gz = path.with_suffix(".jsonl.gz")
        gz.write_bytes(gzip.compress(path.read_bytes()))
        paths.append(str(gz))
    return CorpusSource(manifests=paths)


def _cuts(root, recs):
    return CorpusSource(manifests=[str(write_cuts(root, recs))])


def _nemo(root, recs):
    return CorpusSource(manifests=[str(write_nemo(root, recs))], manifest_format="nemo")


def _kaldi(root, recs):
    return CorpusSource(kaldi_dirs=[str(write_kaldi(root / "data", recs))])


def _kaldi_segments(root, recs):
    return CorpusSource(kaldi_dirs=[str(write_kaldi(root / "data", recs, turns="segments"))])


@pytest.mark.parametrize("describe, has_uem", [(_protocol, True), (_lhotse, False), (_lhotse_gz, False),
                                               (_cuts, False), (_nemo, True), (_kaldi, True), (_kaldi_segments, True)])
def test_each_format_reads_what_the_audio_directory_path_reads(recs, tmp_path, describe, has_uem):
    found = describe(tmp_path, recs).read()

    assert not found.problems, found.problems
    # A protocol always declares its subsets (here all in train); the others declare none without SPLIT= prefixes.
    declared = "train" if describe is _protocol else None
    assert (found.split_origin is not None) == (declared is not None)
    # Lhotse has no UEM: the same turns, without one.
    expected = [type(r)(r.rec_id, r.path, r.segments, r.uem if has_uem else None, split=declared) for r in recs]
    assert records(found.recordings) == records(expected)


def test_a_protocol_declares_the_views_split_and_leaves_test_to_evaluate(recs, tmp_path):
    yml = write_protocol(tmp_path / "db", recs, {"train": ["rec00", "rec01"], "development": ["rec02"],
                                                 "test": ["rec03"]})
    summary = build_features(FeaturesRequest(None, str(tmp_path / "store"), progress=False, jobs=1,
                                             corpus=CorpusSource(protocol=PROTOCOL, database_yml=yml)))

    assert summary.ok, summary.failures
    view = load_view(Store(tmp_path / "store", create=False), "default")
    assert (view.split("train"), view.split("validation"), view.split("all")) == (
        ["rec00", "rec01"], ["rec02"], ["rec00", "rec01", "rec02"])  # test is not in a training view
    assert view.describe_split() == (f"declared by the corpus (pyannote.database protocol {PROTOCOL}: train -> train "
                                     "(2), development -> validation (1), test -> left out (1))")
    text = summary.format()
    assert f"split declared by the corpus (pyannote.database protocol {PROTOCOL}" in text
    assert "1 recording(s) of its test subset left out of this view" in text and "--subset test" in text

    test_only = CorpusSource(protocol=PROTOCOL, database_yml=yml, parts=("test",)).read()
    assert [(r.rec_id, r.split) for r in test_only.recordings] == [("rec03", "test")]


def test_manifest_split_prefixes_declare_the_split(recs, tmp_path):
    train = write_lhotse(tmp_path / "train", recs[:3])
    dev = write_lhotse(tmp_path / "dev", recs[3:])
    corpus = CorpusSource(manifests=[*(f"train={p}" for p in train), *(f"dev={p}" for p in dev)])
    summary = build_features(FeaturesRequest(None, str(tmp_path / "store"), progress=False, jobs=1, corpus=corpus))

    view = load_view(Store(tmp_path / "store", create=False), "default")
    assert summary.ok and view.split("validation") == ["rec03"] and view.split("train") == ["rec00", "rec01", "rec02"]
    assert view.split_origin == "--manifest split prefixes: train -> train (3), dev -> validation (1)"


def test_the_same_audio_reuses_the_same_store_entries_whichever_way_it_came_in(recs, tmp_path):
    store = str(tmp_path / "store")
    first = build_features(FeaturesRequest(recs[0].path.parent, store, rttm_dir=recs[0].path.parent.parent / "rttm",
                                           uem_dir=recs[0].path.parent.parent / "uem", progress=False, jobs=1))
    assert first.computed == 4
    for i, describe in enumerate((_protocol, _nemo, _kaldi)):
        again = build_features(FeaturesRequest(None, store, view=f"v{i}", progress=False, jobs=1,
                                               corpus=describe(tmp_path / f"d{i}", recs)))
        assert (again.computed, again.labels_only, again.reused) == (0, 0, 4), describe.__name__
    views = [load_view(Store(store, create=False), name) for name in ("default", "v0", "v1", "v2")]
    entries = [{rec_id: (e.features, e.labels) for rec_id, e in v.recordings.items()} for v in views]
    assert all(e == entries[0] for e in entries)  # features and labels entries alike


def test_stream_mono_decodes_only_the_region_asked(recs, tmp_path):
    path, _ = long_file(tmp_path, recs)
    whole = np.concatenate(list(stream_mono(path, 16000, 0.5)))
    region = np.concatenate(list(stream_mono(path, 16000, 0.5, offset_s=2.5, duration_s=3.0)))
    np.testing.assert_allclose(region, whole[40000:88000], atol=1e-6)


def test_regions_of_one_long_file_are_recordings_of_their_own(recs, tmp_path):
    path, starts = long_file(tmp_path, recs)
    rttm = tmp_path / "long.rttm"  # the file's turns, in the file's time
    rttm.write_text("".join(f"SPEAKER long 1 {s.start + start:.3f} {s.duration:.3f} <NA> <NA> {s.speaker} <NA> <NA>\n"
                            for r, start in zip([r for r in recs if r.path.suffix == ".wav"], starts)
                            for s in r.segments))
    manifest = write_jsonl(tmp_path / "long.json", [
        {"audio_filepath": str(path), "offset": start, "duration": 6.0, "rttm_filepath": str(rttm)}
        for start in starts] + [{"audio_filepath": str(path), "offset": 0, "duration": None, "rttm_filepath": str(rttm)}])
    found = CorpusSource(manifests=[str(manifest)]).read()

    assert [r.rec_id for r in found.recordings] == ["long", "long_0_6000", "long_6000_12000"]
    whole, first, second = found.recordings
    assert (whole.offset_s, first.offset_s, second.offset_s, second.duration_s) == (None, 0.0, 6.0, 6.0)
    wavs = [r for r in recs if r.path.suffix == ".wav"]
    assert [(s.start, s.duration, s.speaker) for s in second.segments] == records([wavs[1]])[0][4]  # in its own time
    assert len(whole.segments) == sum(len(r.segments) for r in wavs)

    summary = build_features(FeaturesRequest(None, str(tmp_path / "store"), progress=False, jobs=1,
                                             corpus=CorpusSource(manifests=[str(manifest)])))
    store = Store(tmp_path / "store", create=False)
    view = load_view(store, "default")
    assert summary.ok and summary.computed == 3
    keys = {rec_id: rec.features for rec_id, rec in view.recordings.items()}
    assert keys["long"] == feature_key(hash_file(path), view.feature_config)  # a whole file keeps its key
    assert len(set(keys.values())) == 3  # a region's key holds its offset and duration
    assert view.recordings["long_6000_12000"].offset_s == 6.0
    assert view.recordings["long_6000_12000"].duration_s == pytest.approx(6.0)
    feats = {r: np.asarray(store.open("features", k)["feats"][:], dtype=np.float32) for r, k in keys.items()}
    # The region's features are the whole file's over the same seconds (away from the edges, where the STFT pads).
    np.testing.assert_allclose(feats["long_6000_12000"][10:-10], feats["long"][610:1190], atol=0.05)
