"""Matching annotation files to recordings: what is merged, what is reported, what is refused."""

from __future__ import annotations

from pathlib import Path

from agencerdas.pipeline.discover import discover
from agencerdas.pipeline.rttm import Segment, format_rttm, write_rttm

TURNS = [Segment(0.0, 1.0, "alice"), Segment(1.5, 1.0, "bob")]


def _audio(root: Path, *names: str) -> Path:
    audio = root / "audio"
    audio.mkdir(parents=True)
    for name in names:
        (audio / f"{name}.wav").write_bytes(b"")  # discover never decodes
    return audio


def test_a_recording_annotated_by_two_rttm_files_is_refused_naming_both(tmp_path):
    """Per-recording RTTMs beside a corpus-wide one doubled every turn (a perfect hypothesis scored 50% DER)."""
    audio = _audio(tmp_path, "a", "b")
    rttm = tmp_path / "rttm"
    write_rttm(rttm / "a.rttm", "a", TURNS)
    write_rttm(rttm / "b.rttm", "b", TURNS)
    (rttm / "corpus.rttm").write_text(format_rttm("a", TURNS))
    found = discover(audio, rttm)
    assert [r.rec_id for r in found.recordings] == ["b"]
    assert found.recordings[0].segments == TURNS
    [(name, reason)] = found.problems
    assert name == str(audio / "a.wav")
    assert f"more than one RTTM file ({rttm / 'a.rttm'}, {rttm / 'corpus.rttm'})" in reason
    assert "keep one RTTM file per recording" in reason


def test_a_recording_in_two_uem_files_is_refused_too(tmp_path):
    audio = _audio(tmp_path, "a")
    uem = tmp_path / "uem"
    uem.mkdir()
    (uem / "a.uem").write_text("a 1 0 10\n")
    (uem / "all.uem").write_text("a 1 0 10\n")
    found = discover(audio, uem_dir=uem)
    assert found.recordings == []
    assert "more than one UEM file" in found.problems[0][1] and "regions" in found.problems[0][1]


def test_skipped_lines_and_merged_repeats_are_noted_by_file_and_turns_count_once(tmp_path):
    audio = _audio(tmp_path, "a")
    rttm = tmp_path / "rttm"
    rttm.mkdir()
    line = "SPEAKER a 1 0.0 1.0 <NA> <NA> alice <NA> <NA>\n"
    (rttm / "a.rttm").write_text("SPKR-INFO a 1 <NA> <NA> <NA> unknown alice <NA> <NA>\n" + line + line)
    found = discover(audio, rttm)
    assert found.problems == []
    assert found.recordings[0].segments == [Segment(0.0, 1.0, "alice")]
    assert [name for name, _ in found.notes] == [str(rttm / "a.rttm")] * 2
    assert "1 non-SPEAKER line(s) skipped (SPKR-INFO x1)" in found.notes[0][1]
    assert "1 exact repeat(s) of a turn merged" in found.notes[1][1]

