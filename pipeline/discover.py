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

from stores.errors import AgencerdasError

from .audio import AUDIO_EXTENSIONS
from .rttm import Segment, parse_rttm, parse_uem, rttm_safe


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
    """One audio file found on disk. ``rec_id`` is the file name without extension."""

    rec_id: str
    path: Path
    segments: list[Segment] | None = None  # None: no annotation found
    uem: list[tuple[float, float]] | None = None


@dataclass
class Discovery:
    """Recordings found plus problems: (file, reason) pairs reported in the run summary."""

    recordings: list[Recording] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


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


def _annotations(
    directory: Path, suffix: str, parse, problems: list[tuple[str, str]], files: dict[str, list[str]]
) -> dict[str, list]:
    """Per-recording annotation items from every ``suffix`` file under ``directory``.

    A file that fails to parse is reported and contributes nothing, because a
    partly read annotation would silently become wrong labels. ``files`` receives
    the files that name each recording (for reports).
    """
    merged: dict[str, list] = {}
    for path in _walk(directory, (suffix,), problems):
        try:
            for rec, items in parse(path).items():
                merged.setdefault(rec, []).extend(items)
                files.setdefault(rec, []).append(str(path))
        except AgencerdasError as exc:
            problems.append((str(path), str(exc).removeprefix(f"{path}").lstrip(": ")))
    return merged


def discover(audio_dir: Path, rttm_dir: Path | None = None, uem_dir: Path | None = None) -> Discovery:
    """Recordings under ``audio_dir`` with their RTTM turns and UEM regions.

    Annotations are searched in ``rttm_dir`` / ``uem_dir`` (default: ``audio_dir``) and
    matched by recording id, either verbatim or in its RTTM-safe form (whitespace → ``_``).
    Two files with one id, and annotations naming no recording found, are reported.
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
    rttm_files: dict[str, list[str]] = {}
    uem_files: dict[str, list[str]] = {}
    turns = _annotations(Path(rttm_dir or audio_dir), ".rttm", parse_rttm, found.problems, rttm_files)
    regions = _annotations(Path(uem_dir or audio_dir), ".uem", parse_uem, found.problems, uem_files)
    for kind, found_items, files in (("RTTM", turns, rttm_files), ("UEM", regions, uem_files)):
        for name, items in sorted(found_items.items()):
            rec = by_id.get(name) or by_id.get(safe.get(name, ""))
            if rec is None:
                found.problems.append(
                    (", ".join(files[name]), f"{kind} names recording {name!r}, which is not in {audio_dir}")
                )
            elif kind == "RTTM":
                rec.segments = (rec.segments or []) + items
            else:
                rec.uem = (rec.uem or []) + items
    found.recordings = sorted(by_id.values(), key=lambda r: r.rec_id)
    found.problems = [(printable(name), printable(reason)) for name, reason in found.problems]
    return found
