"""A corpus of bad (and awkward but good) inputs through the real `agencerdas features` CLI.

Every bad file must be reported by name with a reason in the end-of-run summary, every good one
committed, the exit status non-zero, no traceback, no hang (a FIFO named .wav is in the corpus),
and a second run must retry only the failures while reusing every good entry untouched.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from agencerdas.pipeline.rttm import Segment, format_rttm, rttm_safe, write_rttm
from agencerdas.stores import Store, load_view
from agencerdas.stores.store import COMMIT
from tests.builders import make_corpus, render, voiced
from tests.reliability.helpers import assert_no_traceback, assert_valid_rttm, cli

UNICODE = "café talk ñ 日本"


def _wav_bytes(samples: np.ndarray, rate: int, scratch: Path) -> bytes:
    sf.write(scratch, samples, rate, subtype="PCM_16")
    data = scratch.read_bytes()
    scratch.unlink()
    return data


def _unreadable_is_possible(path: Path) -> bool:
    """chmod 000 stops reads only without root's CAP_DAC_OVERRIDE."""
    try:
        path.read_bytes()
    except PermissionError:
        return True
    return False


def build_bad_corpus(root: Path) -> dict:
    """Write the corpus; returns what each file is expected to do."""
    audio, rttm = make_corpus(root, n=3, seconds=3.0)
    uem = root / "uem"
    uem.mkdir()
    rng = np.random.default_rng(7)
    tone = lambda seconds, rate: voiced(180.0, seconds, rate, rng)  # noqa: E731
    bad: dict[str, str] = {}  # file name -> a word the reason must contain
    good: dict[str, float] = {f"rec{i:02d}": 3.0 for i in range(3)}  # recording id -> duration
    notes: dict[str, str] = {}

    # ---- audio that cannot be used
    (audio / "empty.wav").write_bytes(b"")
    bad["empty.wav"] = "cannot decode audio"
    (audio / "noise.wav").write_bytes(rng.bytes(5000))
    bad["noise.wav"] = "cannot decode audio"
    full = _wav_bytes(tone(2.0, 16000), 16000, root / "scratch.wav")
    (audio / "truncated.wav").write_bytes(full[: 44 + (len(full) - 44) // 2])  # data chunk says 2 s, holds 1 s
    bad["truncated.wav"] = "truncated"
    zero = bytearray(full)
    zero[24:32] = struct.pack("<II", 0, 0)  # sample rate 0 Hz, byte rate 0
    (audio / "zero_rate.wav").write_bytes(bytes(zero))
    bad["zero_rate.wav"] = "cannot decode audio"
    sf.write(audio / "whole.flac", tone(4.0, 16000), 16000)
    data = (audio / "whole.flac").read_bytes()
    (audio / "whole.flac").unlink()
    (audio / "half.flac").write_bytes(data[: len(data) // 2])
    bad["half.flac"] = "audio"
    (audio / "text.mp3").write_text("this is not an mp3, only text\n" * 200)
    bad["text.mp3"] = "not a recognised audio format"
    os.mkfifo(audio / "fifo.wav")  # opening it for reading would block forever
    bad["fifo.wav"] = "not a regular file"
    os.symlink(audio / "gone.wav", audio / "dangling.wav")
    bad["dangling.wav"] = "symlink"
    os.symlink(audio / "loop_b.wav", audio / "loop_a.wav")
    os.symlink(audio / "loop_a.wav", audio / "loop_b.wav")
    bad["loop_a.wav"] = bad["loop_b.wav"] = "symlink"
    os.symlink(audio, audio / "loopdir")  # a directory loop: must not recurse forever
    sf.write(audio / "perm.wav", tone(1.0, 16000), 16000)
    (audio / "perm.wav").chmod(0)
    if _unreadable_is_possible(audio / "perm.wav"):
        bad["perm.wav"] = "Permission denied"
    else:  # root reads it anyway: then it is simply a good file
        good["perm"] = 1.0

    # ---- awkward but good audio
    sf.write(audio / "tone8k.wav", tone(1.5, 8000), 8000)
    good["tone8k"] = 1.5
    stereo = np.stack([tone(1.5, 48000), np.zeros(72000, np.float32)], axis=1)
    sf.write(audio / "stereo48k.wav", stereo, 48000)
    good["stereo48k"] = 1.5
    sf.write(audio / "short.wav", tone(0.05, 16000), 16000)
    good["short"] = 0.05
    sf.write(audio / f"{UNICODE}.wav", tone(2.0, 16000), 16000)
    good[UNICODE] = 2.0
    (audio / "folder.wav").mkdir()  # a directory with an audio extension is just a directory
    sf.write(audio / "folder.wav" / "inner.wav", tone(1.0, 16000), 16000)
    good["inner"] = 1.0

    # ---- annotations
    write_rttm(rttm / f"{rttm_safe(UNICODE)}.rttm", UNICODE, [Segment(0.1, 0.8, "Zoë Ñ"), Segment(1.0, 0.5, "bob")])
    (rttm / "malformed.rttm").write_text(
        "SPEAKER rec02 1 0.0 1.0 <NA> <NA> alice <NA> <NA>\nSPEAKER rec02 1 0.5 <NA> <NA> bob\n")
    bad["malformed.rttm"] = "expected 'SPEAKER"
    write_rttm(rttm / "ghost.rttm", "ghost", [Segment(0.0, 1.0, "alice")])
    bad["ghost.rttm"] = "'ghost'"
    (rttm / "negative.rttm").write_text("SPEAKER tone8k 1 -0.5 1.0 <NA> <NA> alice <NA> <NA>\n")
    bad["negative.rttm"] = "negative start"
    (rttm / "backwards.rttm").write_text("SPEAKER stereo48k 1 1.0 -0.4 <NA> <NA> alice <NA> <NA>\n")
    bad["backwards.rttm"] = "not positive"
    sf.write(audio / "crowd.wav", tone(3.0, 16000), 16000)
    good["crowd"] = 3.0
    write_rttm(rttm / "crowd.rttm", "crowd", [Segment(0.4 * i, 0.5, f"spk{i}") for i in range(6)])
    sf.write(audio / "overlaps.wav", tone(2.0, 16000), 16000)
    good["overlaps"] = 2.0
    # the same speaker's turns overlap each other, and the last one runs past the end of the audio
    write_rttm(rttm / "overlaps.rttm", "overlaps",
               [Segment(0.1, 1.0, "alice"), Segment(0.5, 1.0, "alice"), Segment(1.5, 2.0, "bob")])
    notes["overlaps.wav"] = "past the end of the audio"
    sf.write(audio / "uem_none.wav", tone(2.0, 16000), 16000)
    write_rttm(rttm / "uem_none.rttm", "uem_none", [Segment(0.1, 1.0, "alice")])
    (uem / "uem_none.uem").write_text("uem_none 1 0.0 0.0\n")
    bad["uem_none.wav"] = "excludes"
    sf.write(audio / "uem_outside.wav", tone(2.0, 16000), 16000)
    write_rttm(rttm / "uem_outside.rttm", "uem_outside", [Segment(0.1, 1.0, "alice")])
    (uem / "uem_outside.uem").write_text("uem_outside 1 50.0 60.0\n")  # scores only time after the audio
    bad["uem_outside.wav"] = "excludes"
    return {"audio": audio, "rttm": rttm, "uem": uem, "bad": bad, "good": good, "notes": notes}


def _committed_at(store: Store) -> dict[str, float]:
    return {f"{kind}/{key}": json.loads((Path(store._path(kind, key)) / COMMIT).read_text())["committed_at"]
            for kind in ("features", "labels") for key in store.keys(kind)}


def test_bad_inputs_are_reported_good_ones_committed_and_a_rerun_retries_only_failures(tmp_path):
    corpus = build_bad_corpus(tmp_path / "corpus")
    audio, rttm, uem, bad, good, notes = (corpus[k] for k in ("audio", "rttm", "uem", "bad", "good", "notes"))
    path = tmp_path / "store"
    argv = ["features", str(audio), "--store", str(path), "--rttm-dir", str(rttm), "--uem-dir", str(uem), "--quiet",
            "--summary-json", str(tmp_path / "summary.json")]

    first = cli(*argv, "--jobs", "2")
    assert first.returncode == 1, first.stdout + first.stderr
    assert_no_traceback(first.stdout, first.stderr)
    summary = json.loads((tmp_path / "summary.json").read_text())
    failures = {Path(name).name: reason for name, reason in summary["failures"]}
    assert set(failures) == set(bad), first.stdout
    for name, word in bad.items():
        assert word in failures[name], f"{name}: {failures[name]!r}"
        line = next(line for line in first.stdout.splitlines() if line.strip().startswith(str(audio / name))
                    or line.strip().startswith(str(rttm / name)))
        assert word in line, line  # the summary shows the reason next to the file
    for name, word in notes.items():
        assert any(Path(n).name == name and word in note for n, note in summary["notes"]), summary["notes"]
    assert f"{len(bad)} failed" in first.stdout

    store = Store(path, create=False)
    assert store.verify().ok
    view = load_view(store, "default")
    assert sorted(view.recordings) == sorted(good)
    for rec_id, seconds in good.items():
        entry = view.recordings[rec_id]
        assert entry.duration_s == pytest.approx(seconds, abs=1e-3)
        assert entry.frames == int(np.ceil(round(seconds * 100, 6)))  # ceil(samples / hop) at 16 kHz
        feats = store.open("features", entry.features)["feats"][:]
        assert feats.shape == (entry.frames, 80) and np.isfinite(feats).all()
    attrs = store.attrs("features", view.recordings["stereo48k"].features)
    assert attrs["sample_rate"] == 48000 and attrs["channels"] == 2
    assert store.attrs("features", view.recordings["tone8k"].features)["sample_rate"] == 8000
    # 8 kHz has no energy above 4 kHz; the 48 kHz file is resampled, not read as 16 kHz
    tone8k = store.open("features", view.recordings["tone8k"].features)["feats"][:].astype(np.float32)
    assert tone8k[:, -10:].mean() < tone8k[:, :30].mean() - 5
    assert view.recordings["crowd"].speakers == [f"spk{i}" for i in range(6)]  # labels keep every speaker
    assert view.recordings[UNICODE].speakers == ["Zoë_Ñ", "bob"] and view.recordings[UNICODE].labels
    overlaps = store.open("labels", view.recordings["overlaps"].labels)["labels"][:]
    assert overlaps[10:150, 0].all() and not overlaps[160:, 0].any() and overlaps[150:, 1].all()
    # a rejected annotation file contributes nothing: rec02 keeps exactly its own turns
    assert view.recordings["rec02"].labels and view.recordings["tone8k"].labels is None
    # the RTTM the project writes for the unicode recording is valid NIST RTTM
    rows = assert_valid_rttm(format_rttm(UNICODE, [Segment(0.1, 0.8, "Zoë Ñ"), Segment(1.0, 0.5, "bob")]))
    assert {row[1] for row in rows} == {rttm_safe(UNICODE)} and {row[7] for row in rows} == {"Zoë_Ñ", "bob"}

    before = _committed_at(store)
    second = cli(*argv, "--jobs", "1")
    assert second.returncode == 1
    assert_no_traceback(second.stdout, second.stderr)
    again = json.loads((tmp_path / "summary.json").read_text())
    assert {Path(name).name for name, _ in again["failures"]} == set(bad)
    assert again["computed"] == 0 and again["labels_only"] == 0
    assert again["reused"] == len(good)
    assert _committed_at(Store(path, create=False)) == before  # no good entry was rewritten
    assert load_view(Store(path, create=False), "default").recordings.keys() == view.recordings.keys()


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_special_files_named_like_audio_never_block_or_crash(kind, tmp_path):
    """In-process too (no subprocess timeout to save us): the run must finish by itself."""
    import threading

    from agencerdas.pipeline import FeaturesRequest, build_features

    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "ok.wav", render([], 1.0, 16000, 0), 16000)
    target = audio / "special.wav"
    os.mkfifo(target) if kind == "fifo" else target.mkdir()
    if kind == "fifo":
        assert stat.S_ISFIFO(os.stat(target).st_mode)
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        summary=build_features(FeaturesRequest(audio, str(tmp_path / "store"), progress=False))), daemon=True)
    thread.start()
    thread.join(60)
    if thread.is_alive():  # unblock the reader so the test process can exit, then fail
        with open(target, "wb"):
            pass
        pytest.fail("the features run blocked on a FIFO named .wav")
    summary = result["summary"]
    assert summary.computed == 1
    if kind == "fifo":
        assert [Path(p).name for p, _ in summary.failures] == ["special.wav"]
    else:
        assert summary.failures == []
