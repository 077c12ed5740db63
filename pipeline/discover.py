"""Finding recordings under an audio directory and matching their annotations by recording id.

File names are bytes on POSIX; Python hands undecodable bytes over as surrogate escapes
(``b"rec\\xff.wav"`` → ``"rec\\udcff.wav"``). An audio file whose path is not UTF-8 is
reported and skipped (:data:`NOT_UTF8`): its name becomes the recording id and its
path the entry's source, both text in UTF-8 files (RTTM, views, entry attributes,
reports), and an RTTM, being UTF-8, could never name such a recording. Annotation files
are read whatever their names, which carry no meaning. Every path in a problem is
made printable (:func:`printable`).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from agencerdas.stores.errors import AgencerdasError

from .audio import AUDIO_EXTENSIONS
from .rttm import Segment, parse_uem, read_rttm, rttm_safe


_MANY_FILES = ("annotated by more than one {kind} file ({files}); reading all would add up their {items} (each one "
               "twice when per-recording files sit beside a corpus-wide one), so the recording was left out: keep one "
               "{kind} file per recording (move the others out of the annotation directory) and rerun")


def printable(text: str) -> str:
    """``text`` with the bytes of an undecodable file name shown as ``\\xff`` escapes, so it can
    be printed and JSON-encoded anywhere; other text is unchanged."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


#: Why an audio file whose path is not UTF-8 is skipped, and what to do.
NOT_UTF8 = ("the file name is not valid UTF-8 (its undecodable bytes are shown as \\x.. escapes); recording ids "
            "and paths are stored as UTF-8 text, so rename the file or its folder to UTF-8 "
            "(e.g. `convmv -f latin1 -t utf8 --notest FILE`) and rerun")


def is_utf8(path: Path | str) -> bool:
    """Whether ``path`` is valid UTF-8 text (no surrogate escapes of undecodable bytes)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class Recording:
    """One recording: an audio file found on disk (``rec_id`` the file name without extension), or an entry
    of a corpus description (:mod:`pipeline.corpora`: its id there). Turns and UEM are in seconds from the
    recording's start."""

    rec_id: str
    path: Path
    segments: list[Segment] | None = None  # None: no annotation found
    uem: list[tuple[float, float]] | None = None
    #: The region of ``path`` this recording is (seconds), when a description cuts one long file into several
    #: recordings; None: the whole file.
    offset_s: float | None = None
    duration_s: float | None = None
    #: The part the corpus declares it in (``train``, ``validation``, ``test``); None: the view's seeded split.
    split: str | None = None

    @property
    def region(self) -> dict | None:
        """What of the file enters the features key: None for the whole file (the key every route shares)."""
        return None if self.offset_s is None else {"offset_s": self.offset_s, "duration_s": self.duration_s}

    @property
    def source(self) -> str:
        """The file, and the region of it, for reports and the view."""
        if self.offset_s is None:
            return str(self.path)
        return f"{self.path} [{self.offset_s:.3f} s +{self.duration_s:.3f} s]"


@dataclass
class Discovery:
    """Recordings found plus problems (failures) and notes: (file, text) pairs reported in the run summary."""

    recordings: list[Recording] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    #: How the corpus declared its splits (:attr:`stores.DatasetView.split_origin`); None: it declared none.
    split_origin: str | None = None


def _walk(root: Path, suffixes: tuple[str, ...], problems: list[tuple[str, str]]) -> list[Path]:
    """Files under ``root`` with one of ``suffixes``, sorted; directory symlinks are not followed
    (so a symlink loop cannot recurse forever) but file symlinks are."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: problems.append((str(e.filename), e.strerror))):
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath) / name
            if path.suffix.lower() not in suffixes:
                continue
            if path.is_symlink() and not path.exists():
                problems.append((str(path), "broken or looping symlink"))
                continue
            try:
                mode = path.stat().st_mode
            except OSError as exc:
                problems.append((str(path), f"cannot read: {exc.strerror or exc}"))
                continue
            if not stat.S_ISREG(mode):  # opening a FIFO would block the run forever; devices, sockets: no audio
                problems.append((str(path), "not a regular file (a FIFO, device or socket); skipped"))
                continue
            found.append(path)
    return sorted(found)


def _rttm(path: Path) -> tuple[dict[str, list[Segment]], list[str]]:
    rttm = read_rttm(path)
    return rttm.turns, rttm.notes()


def _uem(path: Path) -> tuple[dict[str, list[tuple[float, float]]], list[str]]:
    return parse_uem(path), []


def _annotations(directory: Path, suffix: str, parse, found: Discovery) -> dict[str, list[tuple[str, list]]]:
    """(file, items) per recording name from every ``suffix`` file under ``directory``.

    ``parse(path)`` gives (items per name, notes). A file that fails to parse is reported and
    contributes nothing, because a partly read annotation would silently become wrong labels.
    """
    named: dict[str, list[tuple[str, list]]] = {}
    for path in _walk(directory, (suffix,), found.problems):
        try:
            items_by_name, notes = parse(path)
        except AgencerdasError as exc:
            found.problems.append((str(path), str(exc).removeprefix(f"{path}").lstrip(": ")))
            continue
        found.notes += [(str(path), note) for note in notes]
        for name, items in items_by_name.items():
            named.setdefault(name, []).append((str(path), items))
    return named


def discover(audio_dir: Path, rttm_dir: Path | None = None, uem_dir: Path | None = None) -> Discovery:
    """Recordings under ``audio_dir`` with their RTTM turns and UEM regions.

    Annotations are searched in ``rttm_dir`` / ``uem_dir`` (default: ``audio_dir``) and
    matched by recording id, either verbatim or in its RTTM-safe form (whitespace → ``_``).
    Two audio files with one id, and annotations naming no recording found, are reported.
    A recording named by more than one RTTM file (or more than one UEM file) is reported and
    left out of the run: per-file RTTMs beside a corpus-wide one would otherwise count every
    turn twice, and no rule can tell which file is meant.
    """
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise AgencerdasError(f"audio directory {printable(str(audio_dir))} does not exist or is not a directory")
    found = Discovery()
    by_id: dict[str, Recording] = {}
    for path in _walk(audio_dir, AUDIO_EXTENSIONS, found.problems):
        if not is_utf8(path):
            found.problems.append((str(path), NOT_UTF8))
            continue
        rec_id = path.stem
        if rec_id in by_id:
            found.problems.append((str(path), f"duplicate recording id {rec_id!r} (also {by_id[rec_id].path})"))
            continue
        by_id[rec_id] = Recording(rec_id, path)
    safe = {rttm_safe(rec): rec for rec in by_id}
    conflicts: set[str] = set()
    for kind, suffix, parse, directory in (("RTTM", ".rttm", _rttm, rttm_dir), ("UEM", ".uem", _uem, uem_dir)):
        sources: dict[str, list[tuple[str, list]]] = {}  # recording id -> (file, items) of each file naming it
        for name, named in sorted(_annotations(Path(directory or audio_dir), suffix, parse, found).items()):
            rec = by_id.get(name) or by_id.get(safe.get(name, ""))
            if rec is None:
                found.problems.append((", ".join(path for path, _ in named),
                                       f"{kind} names recording {name!r}, which is not in {audio_dir}"))
            else:
                sources.setdefault(rec.rec_id, []).extend(named)
        for rec_id, named in sources.items():
            files = sorted({path for path, _ in named})
            if len(files) > 1:
                conflicts.add(rec_id)
                what = "turns" if kind == "RTTM" else "regions"
                found.problems.append((str(by_id[rec_id].path), _MANY_FILES.format(kind=kind, files=", ".join(files),
                                                                                   items=what)))
            elif kind == "RTTM":
                by_id[rec_id].segments = sorted(set(item for _, items in named for item in items))
            else:
                by_id[rec_id].uem = [item for _, items in named for item in items]
    found.recordings = sorted((r for r in by_id.values() if r.rec_id not in conflicts), key=lambda r: r.rec_id)
    found.problems = [(printable(name), printable(reason)) for name, reason in found.problems]
    found.notes = [(printable(name), printable(note)) for name, note in found.notes]
    return found
