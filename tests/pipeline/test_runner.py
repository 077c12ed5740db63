"""`agencerdas features` end to end: what is computed, reused, rebuilt, reported and exited with."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from agencerdas.pipeline import FeatureConfig, FeaturesRequest, LabelConfig, LogMel, build_features, frame_labels
from agencerdas.pipeline import runner, statcache
from agencerdas.pipeline.audio import stream_mono
from agencerdas.pipeline.rttm import Segment, parse_rttm, write_rttm
from agencerdas.stores import Store, load_view, referenced_keys
from agencerdas.stores import keys as keys_module
from tests.builders import conversation, make_corpus
from agencerdas.cli import main

SECONDS = 4.0


@pytest.fixture
def corpus(tmp_path):
    """Three recordings (wav 16 kHz, flac 22.05 kHz, ogg 8 kHz) with RTTMs, and a store path."""
    audio, rttm = make_corpus(tmp_path / "corpus", n=3, seconds=SECONDS)
    return audio, rttm, tmp_path / "store"


def run(audio: Path, rttm: Path, store: Path, **kwargs):
    summary = build_features(FeaturesRequest(audio_dir=audio, rttm_dir=rttm, store=str(store), progress=False, **kwargs))
    return summary, Store(store, create=False)


def counts(summary) -> tuple[int, int, int, int, int]:
    return summary.found, summary.computed, summary.labels_only, summary.reused, len(summary.failures)


def entry_keys(store: Store, view: str = "default") -> dict[str, tuple[str, str | None]]:
    return {rec: (r.features, r.labels) for rec, r in load_view(store, view).recordings.items()}


def test_first_run_computes_all_and_second_run_reuses_all(corpus):
    audio, rttm, path = corpus
    first, store = run(audio, rttm, path)
    assert first.ok, first.format()
    assert counts(first) == (3, 3, 0, 0, 0)
    assert first.audio_s == pytest.approx(3 * SECONDS, abs=0.01)
    keys = entry_keys(store)
    assert sorted(keys) == ["rec00", "rec01", "rec02"]
    assert len(store.keys("features")) == 3 and len(store.keys("labels")) == 3
    assert (Path(os.environ["AGENCERDAS_CACHE_DIR"]) / "stat-cache.json").is_file()

    second, store = run(audio, rttm, path)
    assert second.ok
    assert counts(second) == (3, 0, 0, 3, 0)
    assert second.audio_s == 0
    assert entry_keys(store) == keys
    assert len(store.keys("features")) == 3 and len(store.keys("labels")) == 3
    assert "computed 0  labels-only 0  reused 3  failed 0" in second.format()
    assert store.verify().ok


def test_view_lists_recordings_with_frames_speakers_and_correct_arrays(corpus):
    audio, rttm, path = corpus
    summary, store = run(audio, rttm, path)
    view = load_view(store, "default")
    assert summary.view == "default"
    assert summary.view_counts == {"all": 3, "train": 2, "validation": 1, "unlabelled": 0}
    assert view.feature_config == FeatureConfig().to_dict() and view.label_config == LabelConfig().to_dict()
    for i, rec_id in enumerate(["rec00", "rec01", "rec02"]):
        rec = view.recordings[rec_id]
        turns = conversation(i, SECONDS)
        first_appearance = list(dict.fromkeys(seg.speaker for seg in sorted(turns)))
        assert rec.frames == 400 and rec.duration_s == pytest.approx(SECONDS)
        assert rec.speakers == first_appearance and len(rec.speakers) == 2 + i % 2
        assert Path(rec.source).stem == rec_id and rec.labels is not None and not rec.pseudo
        feats = store.open("features", rec.features)["feats"][:]
        assert feats.shape == (400, 80) and feats.dtype == np.float16 and np.isfinite(feats).all()
        labels = store.open("labels", rec.labels)["labels"][:]
        expected = frame_labels(parse_rttm(rttm / f"{rec_id}.rttm")[rec_id], 400, 0.01).activity
        np.testing.assert_array_equal(labels, expected)
        assert labels.sum(axis=1).max() == 2  # every conversation has an overlap
        assert store.attrs("labels", rec.labels)["features_key"] == rec.features

    # the stored features are the log-mel of the decoded audio (float16)
    wav = view.recordings["rec00"]
    signal = np.concatenate(list(stream_mono(Path(wav.source), 16000, 1.0)))
    direct = np.concatenate(list(LogMel(FeatureConfig()).process([signal], 10**6)))
    stored = store.open("features", wav.features)["feats"][:].astype(np.float32)
    np.testing.assert_allclose(stored, direct, rtol=2e-3, atol=2e-3)


def test_moved_or_renamed_audio_is_reused_without_feature_work(corpus):
    audio, rttm, path = corpus
    _, store = run(audio, rttm, path)
    before = entry_keys(store)

    (audio / "moved" / "deeper").mkdir(parents=True)
    shutil.move(audio / "rec00.wav", audio / "moved" / "deeper" / "rec00.wav")
    shutil.move(audio / "rec01.flac", audio / "talk.flac")
    turns = parse_rttm(rttm / "rec01.rttm")["rec01"]
    (rttm / "rec01.rttm").unlink()
    write_rttm(rttm / "talk.rttm", "talk", turns)

    summary, store = run(audio, rttm, path)
    assert summary.ok, summary.format()
    assert counts(summary) == (3, 0, 0, 3, 0)
    after = entry_keys(store)
    assert after == {"rec00": before["rec00"], "talk": before["rec01"], "rec02": before["rec02"]}
    view = load_view(store, "default")
    assert view.recordings["rec00"].source == str(audio / "moved" / "deeper" / "rec00.wav")
    assert len(store.keys("features")) == 3


def test_editing_one_rttm_rebuilds_only_its_labels(corpus):
    audio, rttm, path = corpus
    _, store = run(audio, rttm, path)
    before = entry_keys(store)

    turns = parse_rttm(rttm / "rec01.rttm")["rec01"]
    turns[0] = Segment(turns[0].start, round(turns[0].duration + 0.1, 3), turns[0].speaker)
    write_rttm(rttm / "rec01.rttm", "rec01", turns)

    summary, store = run(audio, rttm, path)
    assert summary.ok, summary.format()
    assert counts(summary) == (3, 0, 1, 2, 0)
    after = entry_keys(store)
    assert after["rec00"] == before["rec00"] and after["rec02"] == before["rec02"]
    assert after["rec01"][0] == before["rec01"][0]  # features reused
    assert after["rec01"][1] != before["rec01"][1]
    assert len(store.keys("features")) == 3 and len(store.keys("labels")) == 4

    # the old labels entry is no longer referenced: gc removes exactly it
    removed = store.gc(keep=referenced_keys(store), min_age_s=0)
    assert removed == [store._path("labels", before["rec01"][1])]
    assert store.verify().ok


def test_changing_n_mels_rebuilds_features_and_labels(corpus):
    audio, rttm, path = corpus
    _, store = run(audio, rttm, path)
    before = entry_keys(store)

    summary, store = run(audio, rttm, path, feature_config=FeatureConfig(n_mels=40), view="mels40")
    assert summary.ok
    assert counts(summary) == (3, 3, 0, 0, 0)
    after = entry_keys(store, "mels40")
    for rec in before:
        assert after[rec][0] != before[rec][0] and after[rec][1] != before[rec][1]
        assert store.open("features", after[rec][0])["feats"].shape == (400, 40)
        np.testing.assert_array_equal(
            store.open("labels", after[rec][1])["labels"][:], store.open("labels", before[rec][1])["labels"][:]
        )
    assert len(store.keys("features")) == 6
    assert entry_keys(store, "default") == before  # the other view is untouched


def test_bad_files_are_reported_and_the_rest_committed(corpus):
    audio, rttm, path = corpus
    (audio / "empty.wav").write_bytes(b"")
    (audio / "noise.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    sf.write(audio / "full.wav", np.zeros(16000, np.float32), 16000)
    (audio / "truncated.wav").write_bytes((audio / "full.wav").read_bytes()[:44])  # header, no samples
    (audio / "full.wav").unlink()
    (rttm / "broken.rttm").write_text(
        "SPEAKER rec02 1 0.0 1.0 <NA> <NA> alice <NA> <NA>\nSPEAKER rec02 1 one 1.0 <NA> <NA> bob <NA> <NA>\n"
    )
    write_rttm(rttm / "ghost.rttm", "ghost", [Segment(0.0, 1.0, "alice")])

    summary, store = run(audio, rttm, path)
    assert not summary.ok
    failures = dict(summary.failures)
    assert set(failures) == {
        str(audio / "empty.wav"), str(audio / "noise.wav"), str(audio / "truncated.wav"),
        str(rttm / "broken.rttm"), str(rttm / "ghost.rttm"),
    }
    assert "cannot decode audio" in failures[str(audio / "empty.wav")]
    assert "cannot decode audio" in failures[str(audio / "noise.wav")]
    assert "no audio samples" in failures[str(audio / "truncated.wav")]
    assert failures[str(rttm / "broken.rttm")].startswith("2: start 'one' is not a number")
    assert "'ghost'" in failures[str(rttm / "ghost.rttm")]
    assert summary.found == 6 and summary.computed == 3

    report = summary.format()
    assert "5 failed" in report
    for name in ["empty.wav", "noise.wav", "truncated.wav", "broken.rttm", "ghost.rttm"]:
        assert name in report

    view = load_view(store, "default")
    assert sorted(view.recordings) == ["rec00", "rec01", "rec02"]
    assert all(r.labels and r.frames == 400 and r.speakers for r in view.recordings.values())
    # the broken RTTM contributes nothing: rec02 keeps exactly its own turns
    rec02 = store.open("labels", view.recordings["rec02"].labels)["labels"][:]
    expected = frame_labels(conversation(2, SECONDS), 400, 0.01).activity
    np.testing.assert_array_equal(rec02, expected)
    assert store.verify().ok

    again, _ = run(audio, rttm, path)  # a rerun retries only the failures
    assert counts(again) == (6, 0, 0, 3, 5)


def test_labels_keep_every_speaker_and_the_summary_counts_them(corpus):
    audio, rttm, path = corpus
    (rttm / "rec02.rttm").unlink()
    write_rttm(rttm / "rec00.rttm", "rec00", [Segment(0.5 * i, 0.6, f"spk{i}") for i in range(6)])
    summary, store = run(audio, rttm, path)
    assert summary.ok and summary.view_counts["unlabelled"] == 1 and not summary.notes
    view = load_view(store, "default")
    assert view.recordings["rec02"].labels is None and view.recordings["rec02"].speakers == []
    six = view.recordings["rec00"]
    assert six.speakers == [f"spk{i}" for i in range(6)] and six.n_speakers == 6
    labels = store.open("labels", six.labels)["labels"][:]
    assert labels.shape == (400, 6) and labels.any(axis=0).all()
    assert view.recordings["rec01"].speakers == ["alice", "bob", "carol"]
    assert summary.speakers == {3: 1, 6: 1}
    assert "speakers per annotated recording: 3: 1, 6: 1" in summary.format()


def test_a_store_of_the_old_label_version_rebuilds_labels_only(corpus, monkeypatch):
    """Labels of version 2 held at most 4 speakers: a rerun redoes every labels entry and reuses the features."""
    audio, rttm, path = corpus
    with monkeypatch.context() as patch:
        patch.setattr(keys_module, "LABELS_VERSION", 2)
        old, store = run(audio, rttm, path)
    assert counts(old) == (3, 3, 0, 0, 0)
    before = entry_keys(store)
    summary, store = run(audio, rttm, path)
    assert summary.ok and counts(summary) == (3, 0, 3, 0, 0) and summary.audio_s == 0
    after = entry_keys(store)
    assert all(after[rec][0] == before[rec][0] and after[rec][1] != before[rec][1] for rec in before)


def test_a_recording_without_turns_gets_labels_without_columns(corpus):
    audio, rttm, path = corpus
    (audio / "rec02.uem").write_text("rec02 1 3.0 4.0\n")  # scores only the silence after its last turn
    summary, store = run(audio, rttm, path, validation_fraction=0.0)
    assert summary.ok, summary.format()
    silent = load_view(store, "default").recordings["rec02"]
    assert silent.labels and silent.speakers == [] and silent.n_speakers == 0
    assert store.open("labels", silent.labels)["labels"].shape == (400, 0)


def test_cli_exit_status_and_report(corpus, capsys):
    audio, rttm, path = corpus
    argv = ["features", str(audio), "--store", str(path), "--rttm-dir", str(rttm), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "3 recordings found" in out and "computed 3" in out and "view 'default': 3 recordings" in out

    (audio / "noise.wav").write_bytes(np.random.default_rng(1).bytes(2000))
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "reused 3  failed 1" in out and "noise.wav" in out and "cannot decode audio" in out

    assert main(["store", "verify", "--store", str(path)]) == 0
    assert "verified 6 committed entries" in capsys.readouterr().out
    assert main(["store", "ls", "--store", str(path)]) == 0
    assert "features: 3 entries" in capsys.readouterr().out
    assert main(["store", "gc", "--dry-run", "--store", str(path)]) == 0
    assert "would remove 0 path(s)" in capsys.readouterr().out


def test_cli_store_path_that_is_a_file_exits_2(corpus, capsys):
    audio, rttm, path = corpus
    path.write_text("I am a file")
    assert main(["features", str(audio), "--store", str(path), "--rttm-dir", str(rttm), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert f"agencerdas: error: store path {path} is a file" in captured.err
    assert "Traceback" not in captured.err
    assert main(["store", "verify", "--store", str(path)]) == 2
    assert main(["store", "ls", "--store", str(path.parent / "missing")]) == 2
    assert "no agencerdas store" in capsys.readouterr().err


def test_parallel_run_matches_serial_run(corpus):
    audio, rttm, path = corpus
    summary, store = run(audio, rttm, path, jobs=2)
    assert summary.ok and counts(summary) == (3, 3, 0, 0, 0) and summary.jobs == 2
    parallel = entry_keys(store)
    again, store = run(audio, rttm, path, jobs=1)  # same keys: nothing left to do in-process
    assert counts(again) == (3, 0, 0, 3, 0)
    assert entry_keys(store) == parallel
    assert store.verify().ok


def test_work_starts_before_the_last_file_is_hashed(corpus, monkeypatch):
    """Planning and the work overlap: a task is submitted as soon as its keys are known (one job runs it here,
    in this process, so the order of events is observable)."""
    audio, rttm, path = corpus
    events = []
    hash_file, run_task = statcache.hash_file, runner.run_task

    def hashing(file):
        events.append(("hash", Path(file).stem))
        return hash_file(file)

    def running(task):
        events.append(("run", task.rec_id))
        return run_task(task)

    monkeypatch.setattr(statcache, "hash_file", hashing)
    monkeypatch.setattr(runner, "run_task", running)
    summary, _ = run(audio, rttm, path, jobs=1)
    assert summary.ok and counts(summary) == (3, 3, 0, 0, 0)
    assert events.index(("run", "rec00")) < events.index(("hash", "rec02"))

    events.clear()
    again, _ = run(audio, rttm, path, jobs=1)  # the stat cache was saved when planning ended: nothing is re-read
    assert counts(again) == (3, 0, 0, 3, 0) and events == []


def test_split_by_voices_validates_recordings_whose_speakers_train_never_has(corpus, capsys):
    """rec00-rec01 are spoken by one set of voices, rec02-rec03 by another: validation is one of the sets."""
    audio, rttm, path = corpus
    make_corpus(audio.parent, n=4, seconds=SECONDS)
    other = {"alice": "erin", "bob": "frank", "carol": "dave"}
    for i in (2, 3):
        write_rttm(rttm / f"rec{i:02d}.rttm", f"rec{i:02d}",
                   [Segment(s.start, s.duration, other[s.speaker]) for s in conversation(i, SECONDS)])
    argv = ["features", str(audio), "--store", str(path), "--rttm-dir", str(rttm), "--quiet",
            "--validation-fraction", "0.5", "--split-by", "voices"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    view = load_view(Store(path, create=False), "default")
    assert view.split_by == "voices" and view.split("validation") in (["rec00", "rec01"], ["rec02", "rec03"])
    assert not view.split_voices("validation") & view.split_voices("train")
    assert "split by voices" in out and "validation 2 recordings" in out

    # every recording with the same voices: one group, so the recording split, and the report says why
    for i in (2, 3):
        write_rttm(rttm / f"rec{i:02d}.rttm", f"rec{i:02d}", conversation(i, SECONDS))
    summary, store = run(audio, rttm, path, validation_fraction=0.5, split_by="voices", view="shared")
    assert summary.ok and len(load_view(store, "shared").split("validation")) == 2
    assert "split by recordings (--split-by voices fell back: all 4 labelled recordings are linked" in summary.format()
