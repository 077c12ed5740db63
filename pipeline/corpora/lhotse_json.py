"""Lhotse manifests read as the JSON lines they are (no lhotse import, so `features` stays light): a
``RecordingSet`` with its ``SupervisionSet``, or a ``CutSet``.

A recording is one audio file (a source of type ``file``); its supervisions are its speaker turns
(``start``/``duration`` in seconds from the recording's start, ``speaker``). A cut is a region of a
recording (``start``, ``duration``): it becomes one recording of that region, its id the cut's id, and
its supervisions (seconds from the cut's start) are cut to it. A ``Resample`` transform is fine (every
recording is resampled anyway); other transforms change the audio and are refused per recording.
"""

from __future__ import annotations

from pathlib import Path

from agencerdas.stores.errors import AgencerdasError
from agencerdas.stores.segments import Segment

from ..discover import Recording
from .common import Corpus, in_region, json_lines, resolve_audio, seconds

#: What a Lhotse line is, by the keys it has.
RECORDINGS, SUPERVISIONS, CUTS = "Lhotse RecordingSet", "Lhotse SupervisionSet", "Lhotse CutSet"

_CUT_TYPES = ("MonoCut", "MultiCut", "DataCut")


def lhotse_kind(item: dict) -> str | None:
    """Which Lhotse manifest a line belongs to (None: not Lhotse)."""
    if "sources" in item:
        return RECORDINGS
    if "recording_id" in item and "start" in item:
        return SUPERVISIONS
    if "recording" in item or str(item.get("type", "")).endswith("Cut"):
        return CUTS
    return None


def _text(item: dict, key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise AgencerdasError(f"{where}: field {key!r} must be a non-empty text, got {value!r}; fix the manifest, "
                              "nothing was written")
    return value


def _audio(corpus: Corpus, recording: dict, where: str, manifest: Path) -> Path | None:
    """The local audio file of a Lhotse recording, or None (reported) when it has none agencerdas can read.
    A shell-command source stops the run: agencerdas runs no commands from data files."""
    rec_id = _text(recording, "id", where)
    sources = recording.get("sources")
    if not isinstance(sources, list) or not sources or not all(isinstance(s, dict) for s in sources):
        raise AgencerdasError(f"{where}: recording {rec_id!r} needs 'sources' (a list of audio sources)")
    for source in sources:
        if source.get("type") == "command":
            raise AgencerdasError(
                f"{where}: recording {rec_id!r} gets its audio from a shell command ({source.get('source')!r}); "
                "agencerdas runs no shell commands from data files: write the audio to a file once (run the command "
                "yourself) and name that file in the manifest; nothing was written")
    if len(sources) > 1:
        corpus.problem(where, f"recording {rec_id!r} has {len(sources)} audio sources (one file per channel); "
                              "agencerdas reads one file per recording: mix or pick a channel into one file")
        return None
    if sources[0].get("type") != "file":
        corpus.problem(where, f"recording {rec_id!r} has an audio source of type {sources[0].get('type')!r}; "
                              "agencerdas reads local files (type 'file'): save the audio to a file first")
        return None
    changes = [t.get("name", "?") for t in recording.get("transforms") or [] if isinstance(t, dict)
               and t.get("name") != "Resample"]
    if changes:
        corpus.problem(where, f"recording {rec_id!r} applies Lhotse transforms {', '.join(changes)}, which change "
                              "the audio; agencerdas reads the file as stored: save the transformed audio to a file")
        return None
    return resolve_audio(_text(sources[0], "source", where), manifest)


def _turn(sup: dict, where: str, *, cut: bool) -> Segment:
    """One supervision as a turn; a cut's supervisions may start before the cut (they are cut to it later)."""
    start = seconds(sup.get("start"), "supervision start", where, signed=cut)
    duration = seconds(sup.get("duration"), "supervision duration", where, positive=True)
    speaker = sup.get("speaker")
    if not isinstance(speaker, str) or not speaker.strip():
        raise AgencerdasError(f"{where}: supervision {sup.get('id')!r} has no speaker ({speaker!r}); diarization "
                              "needs the speaker of every turn: fix the manifest, nothing was written")
    return Segment(round(start, 6), round(duration, 6), speaker)


def read_lhotse(corpus: Corpus, files: dict[str, list[Path]], part: str | None) -> None:
    """Add the recordings of one split's Lhotse manifests (``files``: kind -> paths) to ``corpus``."""
    recordings: dict[str, tuple[Path, str, dict]] = {}  # id -> (manifest, where, line)
    for manifest in files.get(RECORDINGS, []):
        for where, item in json_lines(manifest):
            rec_id = _text(item, "id", where)
            if rec_id in recordings:
                raise AgencerdasError(f"recording id {rec_id!r} is declared twice ({recordings[rec_id][1]} and "
                                      f"{where}); fix the manifest, nothing was written")
            recordings[rec_id] = (manifest, where, item)
    if files.get(SUPERVISIONS) and not recordings:
        raise AgencerdasError(f"{files[SUPERVISIONS][0]}: a SupervisionSet needs its RecordingSet: give both manifests "
                              "(with the same split prefix); nothing was written")
    turns: dict[str, list[Segment]] = {}
    for manifest in files.get(SUPERVISIONS, []):
        for where, sup in json_lines(manifest):
            rec_id = _text(sup, "recording_id", where)
            if rec_id not in recordings:
                corpus.problem(where, f"supervision names recording {rec_id!r}, which is not in the RecordingSet "
                                      f"given with it ({', '.join(str(p) for p in files[RECORDINGS])})")
                continue
            turns.setdefault(rec_id, []).append(_turn(sup, where, cut=False))
    for rec_id, (manifest, where, item) in recordings.items():
        path = _audio(corpus, item, where, manifest)
        declared = seconds(item.get("duration"), "duration", where, positive=True)
        if path is None or corpus.audio(path, where, rec_id, declared_s=declared, part=part) is None:
            continue
        segments = sorted(set(turns[rec_id])) if rec_id in turns else None
        corpus.add(Recording(rec_id, path, segments), where, part)
    for manifest in files.get(CUTS, []):
        for where, cut in json_lines(manifest):
            _read_cut(corpus, cut, where, manifest, part)


def _read_cut(corpus: Corpus, cut: dict, where: str, manifest: Path, part: str | None) -> None:
    """One line of a CutSet: a region of a recording, with the supervisions inside it."""
    cut_id = _text(cut, "id", where)
    if cut.get("type", "MonoCut") not in _CUT_TYPES or not isinstance(cut.get("recording"), dict):
        corpus.problem(where, f"cut {cut_id!r} ({cut.get('type', 'a cut')}) has no single recording (a MixedCut or "
                              "PaddingCut mixes or pads audio); agencerdas reads recordings and regions of them")
        return
    path = _audio(corpus, cut["recording"], where, manifest)
    start = seconds(cut.get("start"), "cut start", where)
    duration = seconds(cut.get("duration"), "cut duration", where, positive=True)
    sups = [_turn(sup, where, cut=True) for sup in cut.get("supervisions") or []]
    if path is None:
        return
    region = corpus.audio(path, where, cut_id, start, duration, part=part)
    if region is None:
        return
    length = duration if region[1] is None else region[1]
    segments = sorted(set(in_region(sups, 0.0, length))) if sups else None
    corpus.add(Recording(cut_id, path, segments or None, None, *region), where, part)
