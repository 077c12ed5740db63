"""NIST RTTM and UEM: parsing with file:line errors, and writing.

Both are read as UTF-8 with an optional byte-order mark (``utf-8-sig``): editors on Windows
write one, and read as text it would glue itself to the first field, so the first line would
not read as ``SPEAKER``. RTTM lines of other types (``SPKR-INFO``, ``LEXEME``, ...) are skipped
and counted, and exact repeats of a turn are merged into one (:func:`read_rttm`), so that
what was left out can be reported.

RTTM fields are space-separated, so a recording id or speaker name that contains
whitespace cannot be written verbatim. :func:`rttm_safe` maps every whitespace run
to ``_``; the mapping is applied consistently wherever the project writes an id. Read,
such a name spills into the confidence field or past the format's 10 fields, and the line
is refused (file:line) rather than cut to its first word, which would merge ``Alice Smith``
and ``Alice Jones`` into one speaker.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import xxhash

from agencerdas.stores.errors import AgencerdasError
from agencerdas.stores.segments import Segment

_WHITESPACE = re.compile(r"\s+")


def rttm_safe(name: str) -> str:
    """``name`` with each whitespace run replaced by ``_`` (RTTM fields are space-separated)."""
    return _WHITESPACE.sub("_", name.strip()) or "_"


def _number(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise AgencerdasError(f"{where}: {what} {text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise AgencerdasError(f"{where}: {what} {text!r} is not finite")
    return value


#: NIST RTTM's fields: type, file, channel, start, duration, orthography, speaker type, name, confidence,
#: signal lookahead time; the last two are often left out.
RTTM_FIELDS = 10
#: What a SPEAKER line may hold in its confidence and lookahead fields besides a number.
_NOT_GIVEN = {"<na>", "na", "-"}


def _speaker_fields(fields: list[str], where: str) -> None:
    """Refuse a SPEAKER line whose speaker name holds whitespace: more fields than RTTM has, or a
    confidence or lookahead that is neither a number nor ``<NA>``."""
    extra = [f for f in fields[8:] if f.lower() not in _NOT_GIVEN and not _is_float(f)]
    if len(fields) > RTTM_FIELDS or extra:
        found = f"{len(fields)} fields" if len(fields) > RTTM_FIELDS else f"{' '.join(extra)!r} after the speaker name"
        raise AgencerdasError(
            f"{where}: {found}, but an RTTM SPEAKER line has {RTTM_FIELDS} (the last two <NA> or numbers): is the "
            f"speaker name {' '.join(fields[7:])!r} several words? Join them (e.g. with _) so each speaker is one field")


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _records(path: Path, kind: str) -> Iterator[tuple[str, list[str]]]:
    """(``file:line``, fields) of every non-blank, non-comment line of an annotation file."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise AgencerdasError(f"{path}: cannot read {kind} ({exc})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if fields and not fields[0].startswith(";;"):
            yield f"{path}:{number}", fields


@dataclass
class RttmFile:
    """What one RTTM file holds: sorted turns per recording id, and what of it was not used."""

    turns: dict[str, list[Segment]]
    skipped: Counter = field(default_factory=Counter)  # line type (e.g. SPKR-INFO) -> lines of it skipped
    duplicates: int = 0  # turns that repeated an earlier one exactly (recording, speaker, start, duration)

    def notes(self) -> list[str]:
        """One line each for skipped lines and merged repeats, for the run summary; [] when neither."""
        notes = []
        if self.skipped:
            kinds = ", ".join(f"{kind} x{count}" for kind, count in sorted(self.skipped.items()))
            notes.append(f"{sum(self.skipped.values())} non-SPEAKER line(s) skipped ({kinds})")
        if self.duplicates:
            notes.append(f"{self.duplicates} exact repeat(s) of a turn merged (same recording, speaker, start, "
                         "duration), so no speech counts twice")
        return notes


def parse_rttm(path: Path) -> dict[str, list[Segment]]:
    """Speaker turns per recording id from one RTTM file (several recordings allowed): :func:`read_rttm`'s turns."""
    return read_rttm(path).turns


def read_rttm(path: Path) -> RttmFile:
    """One RTTM file: turns per recording id, sorted, with exact repeats merged, and the skipped lines.

    Only ``SPEAKER`` lines are used; blank lines and ``;;`` comments are skipped silently,
    lines of other types are counted by type. Raises AgencerdasError naming ``file:line``
    for a line that does not parse, a negative start, a non-positive duration, or a speaker name
    of several words (more than :data:`RTTM_FIELDS` fields, or words in the confidence field).
    """
    turns: dict[str, list[Segment]] = defaultdict(list)
    skipped: Counter = Counter()
    for where, fields in _records(path, "RTTM"):
        if fields[0] != "SPEAKER":
            skipped[fields[0]] += 1
            continue
        if len(fields) < 8:
            raise AgencerdasError(
                f"{where}: expected 'SPEAKER <file> <chan> <start> <dur> <NA> <NA> <speaker> ...', "
                f"got {len(fields)} fields"
            )
        _speaker_fields(fields, where)
        start = _number(fields[3], "start", where)
        duration = _number(fields[4], "duration", where)
        if start < 0:
            raise AgencerdasError(f"{where}: negative start time {start}")
        if duration <= 0:
            raise AgencerdasError(f"{where}: duration {duration} is not positive")
        turns[fields[1]].append(Segment(start, duration, fields[7]))
    unique = {rec: sorted(set(segs)) for rec, segs in turns.items()}
    duplicates = sum(len(segs) - len(unique[rec]) for rec, segs in turns.items())
    return RttmFile(unique, skipped, duplicates)


def parse_uem(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Scored regions per recording id from a UEM file: ``<file> <chan> <start> <end>`` (seconds)."""
    regions: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for where, fields in _records(path, "UEM"):
        if len(fields) != 4:
            raise AgencerdasError(f"{where}: expected '<file> <chan> <start> <end>', got {len(fields)} fields")
        start, end = _number(fields[2], "start", where), _number(fields[3], "end", where)
        if start < 0 or end < start:
            raise AgencerdasError(f"{where}: invalid region [{start}, {end}]")
        regions[fields[0]].append((start, end))
    return dict(regions)


def format_rttm(recording: str, segments: Iterable[Segment]) -> str:
    """RTTM text, one ``SPEAKER`` line per segment, ids and speakers made :func:`rttm_safe`, times in
    milliseconds; a turn shorter than half a millisecond is left out, since it would be written with duration
    0.000, which RTTM readers (:func:`read_rttm` too) refuse."""
    rec = rttm_safe(recording)
    return "".join(
        f"SPEAKER {rec} 1 {seg.start:.3f} {seg.duration:.3f} <NA> <NA> {rttm_safe(seg.speaker)} <NA> <NA>\n"
        for seg in sorted(segments) if f"{seg.duration:.3f}" != "0.000"
    )


def write_rttm(path: Path, recording: str, segments: Iterable[Segment]) -> None:
    """Write :func:`format_rttm` to ``path`` (parent directories created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_rttm(recording, segments), encoding="utf-8")


_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def file_safe(name: str) -> str:
    """``name`` usable as one file name: runs of characters outside [A-Za-z0-9._-] become ``_``
    and leading dots are dropped, so an id like ``../../x`` can never leave its directory."""
    return _UNSAFE_FILE_CHARS.sub("_", name).lstrip(".") or "_"


#: The longest file name, in bytes, that common filesystems take (ext4, XFS, btrfs, APFS, NTFS).
NAME_MAX = 255


def unique_file_names(ids: list[str], suffix: str, prefix: str = "") -> list[str]:
    """A distinct file name ``prefix + file_safe(id) + suffix`` for each id, in order, each at most
    :data:`NAME_MAX` bytes: the one rule for every file named after a recording, so outputs never
    overwrite each other and never fail on a long id.

    An id too long keeps its head and gets a hash of the whole id; a name already taken (``a b`` and
    ``a_b``, or two files named ``a`` in different folders) gets a short hash of the id and its position.
    """
    names: list[str] = []
    room = NAME_MAX - len(prefix.encode()) - len(suffix.encode())
    if room < 26:
        raise ValueError(f"prefix {prefix!r} and suffix {suffix!r} leave no room for a name")
    for position, rec in enumerate(ids):
        name = file_safe(rec)  # ASCII: one byte a character
        if len(name) > room:
            name = f"{name[: room - 17]}-{xxhash.xxh3_64_hexdigest(rec.encode())}"
        if prefix + name + suffix in names:
            name = f"{name[: room - 9]}-{xxhash.xxh3_64_hexdigest(f'{position}:{rec}'.encode())[:8]}"
        names.append(prefix + name + suffix)
    return names
