"""``--kaldi-dir [SPLIT=]DIR`` (repeatable): Kaldi data directories as diarization recipes lay them out.

- ``wav.scp``: ``<recording-id> <path>``, one recording per line. Only plain paths: an entry ending in
  ``|`` is a shell command (``sph2pipe -f wav x.sph |``), and agencerdas runs no shell commands from data
  files, so the run stops naming the line.
- ``rttm``: the reference turns (NIST RTTM, recording ids as in ``wav.scp``).
- ``segments`` (``<utt> <recording-id> <start> <end>``) with ``utt2spk``: the turns when there is no
  ``rttm``, as Kaldi recipes build their reference from them; ignored beside an ``rttm``.
- ``uem`` (optional): scored regions per recording.
- ``reco2num_spk``: checked against the turns (a note when they disagree).

Recordings are whole files (``segments`` are speech turns in Kaldi's diarization recipes, not recordings).
"""

from __future__ import annotations

from pathlib import Path

from agencerdas.stores.errors import AgencerdasError
from agencerdas.stores.segments import Segment

from ..discover import Discovery, Recording
from ..rttm import parse_uem, read_rttm
from .common import PARTS, Corpus, declared_part, resolve_audio, seconds, speaker_count_note, text_lines


def _wav_scp(path: Path) -> dict[str, tuple[str, str]]:
    """Recording id -> (``file:line``, audio path text) of a wav.scp."""
    entries: dict[str, tuple[str, str]] = {}
    for where, fields in text_lines(path):
        if len(fields) < 2:
            raise AgencerdasError(f"{where}: expected '<recording-id> <path>', got {' '.join(fields)!r}")
        rec_id, audio = fields[0], " ".join(fields[1:])
        if audio.endswith("|"):
            raise AgencerdasError(
                f"{where}: recording {rec_id!r} is a shell command ({audio!r}); agencerdas runs no shell commands "
                "from data files: write each recording to an audio file once (run the command yourself, e.g. "
                "`sph2pipe -f wav x.sph x.wav`) and list the files in wav.scp; nothing was written")
        if rec_id in entries:
            raise AgencerdasError(f"recording id {rec_id!r} is declared twice ({entries[rec_id][0]} and {where}); "
                                  "fix wav.scp, nothing was written")
        entries[rec_id] = (where, audio)
    return entries


def _segment_turns(directory: Path) -> dict[str, list[Segment]]:
    """Turns per recording from ``segments`` + ``utt2spk`` (empty when either is missing)."""
    if not (directory / "segments").is_file() or not (directory / "utt2spk").is_file():
        return {}
    speakers = {fields[0]: fields[1] for where, fields in text_lines(directory / "utt2spk") if len(fields) >= 2}
    turns: dict[str, list[Segment]] = {}
    for where, fields in text_lines(directory / "segments"):
        if len(fields) != 4:
            raise AgencerdasError(f"{where}: expected '<utt> <recording-id> <start> <end>', got {len(fields)} fields")
        utt, rec_id = fields[0], fields[1]
        start, end = seconds(fields[2], "segment start", where), seconds(fields[3], "segment end", where)
        if end <= start:
            raise AgencerdasError(f"{where}: segment {utt!r} ends at {end} s, not after its start {start} s (a "
                                  "duration of zero or less); fix segments, nothing was written")
        if utt not in speakers:
            raise AgencerdasError(f"{where}: utterance {utt!r} has no speaker in {directory / 'utt2spk'}")
        turns.setdefault(rec_id, []).append(Segment(round(start, 6), round(end - start, 6), speakers[utt]))
    return turns


def _read_dir(corpus: Corpus, directory: Path, part: str | None) -> None:
    scp = directory / "wav.scp"
    if not scp.is_file():
        raise AgencerdasError(f"Kaldi data dir (--kaldi-dir) {directory} has no wav.scp; nothing was written")
    entries = _wav_scp(scp)
    turns = read_rttm(directory / "rttm").turns if (directory / "rttm").is_file() else _segment_turns(directory)
    uem = parse_uem(directory / "uem") if (directory / "uem").is_file() else {}
    counts = {f[0]: f[1] for _, f in text_lines(directory / "reco2num_spk")} if (
        directory / "reco2num_spk").is_file() else {}
    for rec_id in sorted(set(turns) - set(entries)):
        corpus.problem(str(directory), f"the annotation names recording {rec_id!r}, which is not in {scp}")
    for rec_id, (where, audio) in entries.items():
        path = resolve_audio(audio, scp)
        if corpus.audio(path, where, rec_id, part=part) is None:
            continue
        segments = sorted(set(turns[rec_id])) if rec_id in turns else None
        corpus.add(Recording(rec_id, path, segments, uem.get(rec_id)), where, part)
        if counts.get(rec_id, "").isdigit() and (note := speaker_count_note(rec_id, int(counts[rec_id]), segments)):
            corpus.note(str(directory / "reco2num_spk"), note)


def read_kaldi(texts: list[str], parts: tuple[str, ...]) -> Discovery:
    """The recordings of the ``--kaldi-dir`` directories, in the declared ``parts`` when they declare splits."""
    corpus = Corpus("Kaldi data dir", parts)
    names: dict[str, str] = {}
    for text in texts:
        subset, name = declared_part(text)
        directory = Path(name)
        if not directory.is_dir():
            raise AgencerdasError(f"Kaldi data dir (--kaldi-dir) {name} is not an existing directory; nothing was "
                                  "written")
        part = PARTS[subset] if subset else None
        if subset:
            names[part] = subset
        _read_dir(corpus, directory, part)
    return corpus.finish("--kaldi-dir split prefixes", parts, names,
                         "agencerdas evaluate --model MODEL --kaldi-dir SPLIT=DIR ...")
