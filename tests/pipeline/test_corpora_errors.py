"""Bad corpus descriptions: an error in the description stops the run by name (file and line or entry) before
anything is written; a problem with one recording's audio is reported in the summary while the others go on."""

from __future__ import annotations

import json

import pytest

from agencerdas.pipeline.corpora import CorpusSource
from agencerdas.pipeline.runner import FeaturesRequest, build_features
from agencerdas.stores.errors import AgencerdasError
from tests.corpora import PROTOCOL, lhotse_recording, tone_corpus, write_jsonl, write_lhotse, write_protocol


@pytest.fixture(scope="module")
def recs(tmp_path_factory):
    return tone_corpus(tmp_path_factory.mktemp("tones"), n=3)


def _refused(tmp_path, corpus: CorpusSource, *texts: str) -> None:
    """The run stops with an error holding ``texts`` and writes nothing (not even the store)."""
    with pytest.raises(AgencerdasError) as error:
        build_features(FeaturesRequest(None, str(tmp_path / "store"), progress=False, jobs=1, corpus=corpus))
    for text in texts:
        assert text in str(error.value), str(error.value)
    assert "nothing was written" in str(error.value)
    assert not (tmp_path / "store").exists()


def test_a_protocol_that_does_not_exist_is_named_with_the_ones_that_do(recs, tmp_path):
    yml = write_protocol(tmp_path, recs, {"train": ["rec00"]})
    _refused(tmp_path, CorpusSource(protocol="Tones.SpeakerDiarization.Nope", database_yml=yml),
             "no pyannote.database protocol 'Tones.SpeakerDiarization.Nope'", str(yml), PROTOCOL)


def test_a_supervision_with_a_negative_duration_is_named_by_file_and_line(recs, tmp_path):
    recordings, supervisions = write_lhotse(tmp_path, recs)
    lines = supervisions.read_text().splitlines()
    lines[1] = json.dumps({**json.loads(lines[1]), "duration": -0.5})
    supervisions.write_text("\n".join(lines) + "\n")
    _refused(tmp_path, CorpusSource(manifests=[str(recordings), str(supervisions)]),
             f"{supervisions}:2: supervision duration -0.5 is negative")


def test_a_kaldi_command_entry_is_refused_by_name(recs, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "wav.scp").write_text(f"rec00 {recs[0].path}\nrec01 sph2pipe -f wav rec01.sph |\n")
    _refused(tmp_path, CorpusSource(kaldi_dirs=[str(tmp_path / "data")]),
             f"{tmp_path / 'data' / 'wav.scp'}:2: recording 'rec01' is a shell command", "runs no shell commands")


def test_a_lhotse_command_source_is_refused_by_name(recs, tmp_path):
    recording = {**lhotse_recording("rec00", recs[0].path), "sources": [
        {"type": "command", "channels": [0], "source": "curl http://example.invalid/a.wav"}]}
    manifest = write_jsonl(tmp_path / "recordings.jsonl", [recording])
    _refused(tmp_path, CorpusSource(manifests=[str(manifest)]), f"{manifest}:1", "runs no shell commands")


def test_a_recording_id_declared_twice_is_named_with_both_lines(recs, tmp_path):
    line = {"audio_filepath": str(recs[0].path), "offset": 0, "duration": None}
    manifest = write_jsonl(tmp_path / "nemo.json", [line, {**line, "audio_filepath": str(recs[0].path)}])
    _refused(tmp_path, CorpusSource(manifests=[str(manifest)]),
             f"recording id 'rec00' is declared twice ({manifest}:1 and {manifest}:2)")


def test_splits_that_overlap_are_refused(recs, tmp_path):
    yml = write_protocol(tmp_path / "db", recs, {"train": ["rec00", "rec01"], "test": ["rec01"]})
    _refused(tmp_path, CorpusSource(protocol=PROTOCOL, database_yml=yml),
             "splits overlap: recording 'rec01' is declared in train", "and in test")
    # The same seconds of one file under two ids, in two splits.
    train = write_jsonl(tmp_path / "train.json", [{"audio_filepath": str(recs[0].path), "offset": 1.0, "duration": 2.0}])
    test = write_jsonl(tmp_path / "test.json", [{"audio_filepath": str(recs[0].path), "offset": 2.5, "duration": 2.0}])
    _refused(tmp_path, CorpusSource(manifests=[f"train={train}", f"test={test}"]),
             f"splits overlap: {recs[0].path.resolve()} is in train as 'rec00_1000_3000' ({train}:1) and in test")


def test_a_missing_audio_file_or_an_offset_beyond_the_end_fails_that_recording_only(recs, tmp_path):
    manifest = write_jsonl(tmp_path / "nemo.json", [
        {"audio_filepath": str(recs[0].path), "offset": 0, "duration": None},
        {"audio_filepath": str(tmp_path / "gone.wav"), "offset": 0, "duration": None},
        {"audio_filepath": str(recs[1].path), "offset": 60.0, "duration": 2.0},
        {"audio_filepath": str(recs[2].path), "offset": 5.0, "duration": 4.0}])
    summary = build_features(FeaturesRequest(None, str(tmp_path / "store"), progress=False, jobs=1,
                                             corpus=CorpusSource(manifests=[str(manifest)])))

    assert summary.computed == 1 and summary.view_counts["all"] == 1
    failures = dict(summary.failures)
    assert f"named by {manifest}:2 (recording 'gone'): no such audio file" in failures[str(tmp_path / "gone.wav")]
    assert f"named by {manifest}:3 (recording 'rec01'): offset 60.000 s is beyond the end of the file (6.000 s)" \
        in failures[str(recs[1].path)]
    assert "the region 5.000-9.000 s ends past the end of the file" in failures[str(recs[2].path)]
    assert "3 failed" in summary.format()


def test_a_lhotse_recording_longer_than_its_file_fails_that_recording_only(recs, tmp_path):
    manifest = write_jsonl(tmp_path / "recordings.jsonl", [
        lhotse_recording("rec00", recs[0].path), {**lhotse_recording("rec01", recs[1].path), "duration": 9.0}])
    found = CorpusSource(manifests=[str(manifest)]).read()
    assert [r.rec_id for r in found.recordings] == ["rec00"]
    assert "declares 9.000 s of audio but the file holds 6.000 s" in dict(found.problems)[str(recs[1].path)]
