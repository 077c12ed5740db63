"""RTTM and UEM parsing and writing."""

from __future__ import annotations

from pathlib import Path

import pytest

from agencerdas.pipeline.rttm import Segment, format_rttm, parse_rttm, parse_uem, read_rttm, rttm_safe, write_rttm
from agencerdas.stores.errors import AgencerdasError

TURNS = [Segment(0.25, 1.5, "alice"), Segment(1.5, 0.75, "bob"), Segment(3.125, 2.0, "alice")]


def test_write_parse_round_trip(tmp_path):
    path = tmp_path / "deep" / "rec.rttm"
    write_rttm(path, "rec", list(reversed(TURNS)))
    assert parse_rttm(path) == {"rec": TURNS}
    assert format_rttm("rec", TURNS) == path.read_text()
    assert path.read_text().splitlines()[0] == "SPEAKER rec 1 0.250 1.500 <NA> <NA> alice <NA> <NA>"


def test_several_recordings_comments_and_other_line_types(tmp_path):
    path = tmp_path / "all.rttm"
    path.write_text(
        ";; a comment\n"
        "\n"
        "SPKR-INFO a 1 <NA> <NA> <NA> unknown alice <NA> <NA>\n"
        "SPEAKER b 1 2.0 1.0 <NA> <NA> bob <NA> <NA>\n"
        "SPEAKER a 1   0.5\t0.5 <NA> <NA> alice\n"  # extra whitespace, only 8 fields
        "SPEAKER a 1 0.0 0.25 <NA> <NA> carol <NA> <NA>\n"
    )
    assert parse_rttm(path) == {
        "a": [Segment(0.0, 0.25, "carol"), Segment(0.5, 0.5, "alice")],
        "b": [Segment(2.0, 1.0, "bob")],
    }


@pytest.mark.parametrize(
    "line, message",
    [
        ("SPEAKER rec 1 0.5 1.0 <NA> <NA>", "expected 'SPEAKER"),
        ("SPEAKER rec 1 abc 1.0 <NA> <NA> alice", "start 'abc' is not a number"),
        ("SPEAKER rec 1 0.5 nan <NA> <NA> alice", "not finite"),
        ("SPEAKER rec 1 -0.5 1.0 <NA> <NA> alice", "negative start"),
        ("SPEAKER rec 1 0.5 0 <NA> <NA> alice", "not positive"),
        ("SPEAKER rec 1 0.5 -1 <NA> <NA> alice", "not positive"),
        # a speaker name of two words: past the format's 10 fields, or a word where the confidence goes
        ("SPEAKER rec 1 0.5 1.0 <NA> <NA> Alice Smith <NA> <NA>", "11 fields"),
        ("SPEAKER rec 1 0.5 1.0 <NA> <NA> Alice Smith", "'Smith' after the speaker name"),
        ("SPEAKER rec 1 0.5 1.0 <NA> <NA> Alice Smith <NA>", "'Alice Smith <NA>' several words"),
    ],
)
def test_bad_line_error_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.rttm"
    path.write_text("SPEAKER rec 1 0.0 1.0 <NA> <NA> alice <NA> <NA>\n;; fine so far\n" + line + "\n")
    with pytest.raises(AgencerdasError) as info:
        parse_rttm(path)
    assert str(info.value).startswith(f"{path}:3: ")
    assert message in str(info.value)


def test_two_speakers_sharing_a_first_name_are_never_merged(tmp_path):
    path = tmp_path / "names.rttm"
    path.write_text("SPEAKER rec 1 0.0 1.0 <NA> <NA> Alice Smith <NA> <NA>\n"
                    "SPEAKER rec 1 2.0 1.0 <NA> <NA> Alice Jones <NA> <NA>\n")
    with pytest.raises(AgencerdasError, match=r"names.rttm:1: .*Join them"):
        read_rttm(path)


def test_confidence_and_lookahead_may_be_numbers_or_na(tmp_path):
    path = tmp_path / "scored.rttm"
    path.write_text("SPEAKER rec 1 0.0 1.0 <NA> <NA> alice 0.93 <NA>\nSPEAKER rec 1 2.0 1.0 <NA> <NA> bob NA 0\n")
    assert parse_rttm(path) == {"rec": [Segment(0.0, 1.0, "alice"), Segment(2.0, 1.0, "bob")]}


def test_a_turn_too_short_to_write_is_left_out_so_the_file_reads_back(tmp_path):
    # a one-sample recording's turn lasts 1/16000 s, which milliseconds write as duration 0.000
    path = tmp_path / "onesample.rttm"
    write_rttm(path, "onesample", [Segment(0.0, 1 / 16000, "spk0"), Segment(1.0, 0.0006, "spk1")])
    assert parse_rttm(path) == {"onesample": [Segment(1.0, 0.001, "spk1")]}


def test_unreadable_rttm_is_an_error(tmp_path):
    path = tmp_path / "binary.rttm"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(AgencerdasError, match="cannot read RTTM"):
        parse_rttm(path)
    with pytest.raises(AgencerdasError, match="cannot read RTTM"):
        parse_rttm(tmp_path / "missing.rttm")


def test_uem_parse(tmp_path):
    path = tmp_path / "all.uem"
    path.write_text(";; scored regions\nrec 1 0.0 10.5\nrec 1 20 30\nother 1 1.25 2.5\n\n")
    assert parse_uem(path) == {"rec": [(0.0, 10.5), (20.0, 30.0)], "other": [(1.25, 2.5)]}


@pytest.mark.parametrize(
    "line, message",
    [("rec 1 5.0", "got 3 fields"), ("rec 1 5.0 4.0", "invalid region"), ("rec 1 -1 4.0", "invalid region"),
     ("rec 1 x 4.0", "not a number")],
)
def test_uem_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.uem"
    path.write_text(f"rec 1 0 1\n{line}\n")
    with pytest.raises(AgencerdasError) as info:
        parse_uem(path)
    assert str(info.value).startswith(f"{path}:2: ") and message in str(info.value)


def test_rttm_safe_maps_whitespace():
    assert rttm_safe("meeting 01") == "meeting_01"
    assert rttm_safe("a \t b\nc") == "a_b_c"
    assert rttm_safe("  padded  ") == "padded"
    assert rttm_safe("plain-id_1") == "plain-id_1"
    assert rttm_safe("   ") == "_"


def test_ids_and_speakers_with_whitespace_round_trip_in_safe_form(tmp_path):
    path = tmp_path / "x.rttm"
    write_rttm(path, "meeting 01", [Segment(1.0, 2.0, "Dr. Who"), Segment(0.0, 1.0, "alice")])
    text = path.read_text()
    assert all(len(line.split()) == 10 for line in text.splitlines())
    assert parse_rttm(Path(path)) == {"meeting_01": [Segment(0.0, 1.0, "alice"), Segment(1.0, 2.0, "Dr._Who")]}


def test_a_byte_order_mark_does_not_cost_the_first_line(tmp_path):
    """Windows editors write a UTF-8 BOM; read as plain UTF-8 it glued itself to 'SPEAKER' and the
    first turn (or the first UEM region's recording id) silently went missing."""
    rttm = tmp_path / "bom.rttm"
    rttm.write_bytes(b"\xef\xbb\xbf" + format_rttm("rec", TURNS).encode())
    assert parse_rttm(rttm) == {"rec": TURNS}
    assert read_rttm(rttm).skipped == {}
    uem = tmp_path / "bom.uem"
    uem.write_bytes(b"\xef\xbb\xbfrec 1 0.0 10.5\n")
    assert parse_uem(uem) == {"rec": [(0.0, 10.5)]}


def test_skipped_lines_are_counted_and_exact_repeats_merged(tmp_path):
    path = tmp_path / "all.rttm"
    path.write_text(
        ";; comments and blank lines are not counted\n\n"
        "SPKR-INFO a 1 <NA> <NA> <NA> unknown alice <NA> <NA>\n"
        "SPKR-INFO a 1 <NA> <NA> <NA> unknown bob <NA> <NA>\n"
        "LEXEME a 1 0.1 0.2 hello lex alice <NA> <NA>\n"
        "SPEAKER a 1 0.5 0.5 <NA> <NA> alice <NA> <NA>\n"
        "SPEAKER a 1 0.500 0.50 <NA> <NA> alice <NA> <NA>\n"  # the same turn, written differently
        "SPEAKER a 1 0.5 0.5 <NA> <NA> bob <NA> <NA>\n"  # another speaker at the same time: kept
        "SPEAKER b 1 0.5 0.5 <NA> <NA> alice <NA> <NA>\n"  # another recording: kept
    )
    rttm = read_rttm(path)
    assert rttm.turns == {"a": [Segment(0.5, 0.5, "alice"), Segment(0.5, 0.5, "bob")],
                          "b": [Segment(0.5, 0.5, "alice")]}
    assert parse_rttm(path) == rttm.turns
    assert rttm.skipped == {"SPKR-INFO": 2, "LEXEME": 1} and rttm.duplicates == 1
    assert rttm.notes() == [
        "3 non-SPEAKER line(s) skipped (LEXEME x1, SPKR-INFO x2)",
        "1 exact repeat(s) of a turn merged (same recording, speaker, start, duration), so no speech counts twice",
    ]
    path.write_text(format_rttm("a", TURNS))
    assert read_rttm(path).notes() == []
