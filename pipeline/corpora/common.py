"""What every corpus reader shares: declared split names, JSON lines with ``file:line`` errors, audio
paths resolved and checked, regions of long files, and the checks across recordings (an id declared
twice, splits that overlap).

Errors in a description itself (a duplicate id, overlapping splits, a negative duration, a shell command
for audio) stop the run before anything is written: a description read in part would silently train on
less, or on the test set. What concerns one recording's audio (a missing file, an offset beyond its end)
is reported by name in the run summary while the other recordings go on, as for an audio directory.
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from agencerdas.stores.errors import AgencerdasError
from agencerdas.stores.segments import Segment

from ..audio import AudioInfo, probe
from ..discover import Discovery, Recording, printable

#: A corpus's subset names -> the view's parts (pyannote.database: train / development / test; Lhotse and
#: Kaldi recipes: train / dev / test).
PARTS = {"train": "train", "development": "validation", "dev": "validation", "validation": "validation",
         "valid": "validation", "test": "test", "eval": "test"}

#: A region within this much of the whole file (seconds, one base frame) is the whole file: it gets the
#: whole file's features key, so the same audio reached through a directory reuses the same entry.
WHOLE_FILE_TOLERANCE_S = 0.01

#: How far a declared length or region end may pass the file's end (seconds) before it is refused: manifests
#: round durations; further out, the description names other audio than the file holds.
PAST_END_TOLERANCE_S = 0.05


def declared_part(text: str) -> tuple[str | None, str]:
    """``SPLIT=PATH`` -> (subset name, PATH); a plain PATH -> (None, PATH). Only the names of :data:`PARTS`
    count as a split (a path may itself hold ``=``)."""
    name, sep, rest = text.partition("=")
    return (name, rest) if sep and name in PARTS else (None, text)


def seconds(value: Any, what: str, where: str, *, positive: bool = False, signed: bool = False) -> float:
    """``value`` as a finite number of seconds, >= 0 (> 0 with ``positive``; any sign with ``signed``);
    AgencerdasError naming ``where`` otherwise (a text like ``"1.5"`` counts: Kaldi files hold numbers as text)."""
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        raise AgencerdasError(f"{where}: {what} must be a finite number of seconds, got {value!r}; "
                              "fix the description, nothing was written")
    if (number < 0 and not signed) or (positive and number <= 0):
        raise AgencerdasError(f"{where}: {what} {value!r} is {'negative' if number < 0 else 'zero'}; a {what} "
                              f"must be {'positive' if positive else 'at least 0'}: fix the description, nothing "
                              "was written")
    return float(number)


def json_lines(path: Path) -> Iterator[tuple[str, dict]]:
    """(``file:line``, object) of every non-blank line of a JSON-lines file (``.gz``: gzip-compressed)."""
    try:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise AgencerdasError(f"{path}: cannot read the manifest ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise AgencerdasError(f"{where}: not a JSON line ({exc}); manifests hold one JSON object per line "
                                  "(jsonl or jsonl.gz)") from None
        if not isinstance(item, dict):
            raise AgencerdasError(f"{where}: expected a JSON object, got {type(item).__name__}")
        yield where, item


def text_lines(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(``file:line``, whitespace-separated fields) of every non-blank line of a Kaldi-style text file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AgencerdasError(f"{path}: cannot read ({exc})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield f"{path}:{number}", line.split()


def resolve_audio(text: str, description: Path) -> Path:
    """An audio path of a description: as given (absolute, or from the working directory) when that exists,
    else relative to the description's folder (what pyannote.database does for its paths)."""
    path = Path(text).expanduser()
    if path.is_absolute() or path.exists():
        return path
    beside = Path(description).parent / path
    return beside if beside.exists() else path


def in_region(turns: list[Segment], offset_s: float, duration_s: float) -> list[Segment]:
    """``turns`` (seconds in the file) moved to a region's time and cut to it; turns outside it are dropped."""
    kept = []
    for seg in turns:
        start, end = max(seg.start - offset_s, 0.0), min(seg.end - offset_s, duration_s)
        if end > start:
            kept.append(Segment(round(start, 6), round(end - start, 6), seg.speaker))
    return kept


def uem_in_region(uem: list[tuple[float, float]] | None, offset_s: float, duration_s: float):
    """UEM regions (seconds in the file) moved to a region's time and cut to it; None stays None."""
    if uem is None:
        return None
    return [(round(max(a - offset_s, 0.0), 6), round(min(b - offset_s, duration_s), 6)) for a, b in uem
            if min(b - offset_s, duration_s) > max(a - offset_s, 0.0)]


def speaker_count_note(rec_id: str, declared: int, turns: list[Segment] | None) -> str | None:
    """A note when a description's declared number of speakers disagrees with its turns (None when it agrees)."""
    found = len({seg.speaker for seg in turns or []})
    if turns is None or declared == found:
        return None
    return (f"recording {rec_id!r} declares {declared} speakers but its turns name {found}; the turns are used "
            "(check the annotation)")


@dataclass
class Corpus:
    """Recordings of one description as a reader finds them, with the checks every format shares.

    ``kind`` names the description in messages (e.g. "Lhotse manifest"). Problems and notes are
    (name, text) pairs for the run summary, as :class:`~pipeline.discover.Discovery` holds them.
    """

    kind: str
    wanted: tuple[str, ...]  # the parts read; the others are only declared (ids and audio, for the checks)
    found: Discovery = field(default_factory=Discovery)
    where: dict[str, str] = field(default_factory=dict)  # recording id -> where it was declared
    parts: dict[str, str | None] = field(default_factory=dict)  # recording id -> its declared part
    #: (resolved file, offset, duration, part, recording id) of every recording in a declared part.
    spans: list[tuple[Path, float | None, float | None, str, str]] = field(default_factory=list)
    _headers: dict[Path, AudioInfo | str] = field(default_factory=dict)

    def problem(self, name: str, text: str) -> None:
        self.found.problems.append((printable(str(name)), printable(text)))

    def note(self, name: str, text: str) -> None:
        self.found.notes.append((printable(str(name)), printable(text)))

    def _header(self, path: Path) -> AudioInfo | str:
        """The file's header facts, or why it cannot be read (read once per file)."""
        if path not in self._headers:
            try:
                self._headers[path] = probe(path)
            except AgencerdasError as exc:
                self._headers[path] = str(exc).removeprefix(f"{path}: ")
        return self._headers[path]

    def audio(self, path: Path, where: str, rec_id: str, offset_s: float | None = None, duration_s: float | None = None,
              declared_s: float | None = None, part: str | None = None) -> tuple[float | None, float | None] | None:
        """Check a recording's audio before any work: (offset, duration) of its region, both None for the whole
        file; None when it was reported as a problem (missing file, offset beyond the end, a declared length
        the file does not have).

        The header is read only for a region or a declared length (soundfile, no samples decoded). A region
        covering the whole file (within :data:`WHOLE_FILE_TOLERANCE_S`) becomes the whole file. A recording of
        a ``part`` not read (a test subset in a features run) is not checked: its problems belong to that run.
        """
        if part is not None and part not in self.wanted:
            return offset_s, duration_s
        named = f"named by {where} (recording {rec_id!r})"
        if not path.is_file():
            self.problem(str(path), f"{named}: no such audio file (a relative path is tried from the working "
                                    f"directory and from the {self.kind}'s folder); fix the path or the file")
            return None
        if offset_s is None and duration_s is None and declared_s is None:
            return None, None
        info = self._header(path)
        if isinstance(info, str):
            self.problem(str(path), f"{named}: {info}")
            return None
        if declared_s is not None and abs(declared_s - info.duration_s) > PAST_END_TOLERANCE_S:
            self.problem(str(path), f"{named}: the {self.kind} declares {declared_s:.3f} s of audio but the file "
                                    f"holds {info.duration_s:.3f} s; it describes other audio (or the file was "
                                    "cut): fix the entry")
            return None
        offset = offset_s or 0.0
        if offset >= info.duration_s:
            self.problem(str(path), f"{named}: offset {offset:.3f} s is beyond the end of the file "
                                    f"({info.duration_s:.3f} s); fix the entry's offset")
            return None
        end = info.duration_s if duration_s is None else offset + duration_s
        if end > info.duration_s + PAST_END_TOLERANCE_S:
            self.problem(str(path), f"{named}: the region {offset:.3f}-{end:.3f} s ends past the end of the file "
                                    f"({info.duration_s:.3f} s); fix the entry's offset or duration")
            return None
        end = min(end, info.duration_s)
        if offset <= WHOLE_FILE_TOLERANCE_S and end >= info.duration_s - WHOLE_FILE_TOLERANCE_S:
            return None, None
        return round(offset, 6), round(end - offset, 6)

    def declare(self, rec_id: str, where: str, part: str | None, path: Path | None = None,
                offset_s: float | None = None, duration_s: float | None = None) -> None:
        """Register ``rec_id`` (declared at ``where`` in ``part``, of ``path``'s region when known); an id
        declared twice stops the run."""
        if rec_id in self.where:
            first, other = self.where[rec_id], self.parts[rec_id]
            if other != part:
                raise AgencerdasError(
                    f"splits overlap: recording {rec_id!r} is declared in {other or 'no split'} ({first}) and in "
                    f"{part or 'no split'} ({where}); a recording belongs to one split, or training sees the data "
                    "it is selected or scored on: fix the description, nothing was written")
            raise AgencerdasError(
                f"recording id {rec_id!r} is declared twice ({first} and {where}); ids must be unique within "
                f"a {self.kind}: fix the description, nothing was written")
        self.where[rec_id], self.parts[rec_id] = where, part
        if path is not None and part is not None:
            self.spans.append((path.resolve(), offset_s, duration_s, part, rec_id))

    def add(self, rec: Recording, where: str, part: str | None) -> None:
        """Keep ``rec`` (declared at ``where`` in ``part``); an id declared twice stops the run."""
        self.declare(rec.rec_id, where, part, rec.path, rec.offset_s, rec.duration_s)
        rec.split = part
        self.found.recordings.append(rec)

    def check_overlap(self) -> None:
        """Refuse the same audio (one file, overlapping regions) declared in two splits under different ids."""
        by_file: dict[Path, list[tuple]] = {}
        for span in self.spans:
            by_file.setdefault(span[0], []).append(span)
        for spans in by_file.values():
            for i, (path, a_off, a_dur, a_part, a_id) in enumerate(spans):
                for _, b_off, b_dur, b_part, b_id in spans[i + 1:]:
                    if a_part != b_part and _overlaps(a_off, a_dur, b_off, b_dur):
                        raise AgencerdasError(
                            f"splits overlap: {path} is in {a_part} as {a_id!r} ({self.where[a_id]}) and in {b_part} "
                            f"as {b_id!r} ({self.where[b_id]}), over the same seconds; a recording belongs to one "
                            "split: fix the description, nothing was written")

    def finish(self, origin: str, wanted: tuple[str, ...], subset_names: dict[str, str], hint: str) -> Discovery:
        """The recordings of the ``wanted`` parts, sorted by id, with the split's origin described.

        ``subset_names`` maps each part found to the corpus's own name for it (e.g. validation ->
        development); ``hint`` is the command that reads a part left out (for the note).
        """
        self.check_overlap()
        found = self.found
        declared = set(self.parts.values())
        if None in declared and len(declared) > 1:
            raise AgencerdasError(f"the {self.kind} declares a split for some recordings and none for others; "
                                  "declare one for every file (SPLIT=PATH) or for none, nothing was written")
        if declared and None not in declared:
            counts = {part: sum(p == part for p in self.parts.values())
                      for part in sorted(declared, key=("train", "validation", "test").index)}
            rules = [f"{subset_names.get(part, part)} -> {part if part in wanted else 'left out'} ({n})"
                     for part, n in counts.items()]
            found.split_origin = f"{origin}: {', '.join(rules)}"
            for part, n in counts.items():
                if part not in wanted:
                    self.note(origin, f"{n} recording(s) of its {subset_names.get(part, part)} subset left out of "
                                      f"this view; `{hint} --subset {subset_names.get(part, part)}` reads them")
            found.recordings = [rec for rec in found.recordings if rec.split in wanted]
        found.recordings.sort(key=lambda rec: rec.rec_id)
        return found


def _overlaps(a_offset: float | None, a_duration: float | None, b_offset: float | None,
              b_duration: float | None) -> bool:
    """Whether two regions of one file share audio (None: from the start, or to the end)."""
    a_start, b_start = a_offset or 0.0, b_offset or 0.0
    a_end = math.inf if a_duration is None else a_start + a_duration
    b_end = math.inf if b_duration is None else b_start + b_duration
    return a_start < b_end and b_start < a_end
