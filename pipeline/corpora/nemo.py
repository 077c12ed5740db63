"""NeMo diarization manifests: JSON lines with ``audio_filepath``, ``offset``, ``duration``,
``rttm_filepath``, ``uem_filepath`` and ``num_speakers``.

Each line is a recording: the whole file (offset 0, duration null or the file's length) keeps the file's
stem as its id; a region of a longer file gets ``STEM_STARTMS_ENDMS`` (milliseconds), so several regions
of one file are distinct recordings. The RTTM and UEM are in the file's time (NeMo's convention); their
turns and regions are moved to the region's time and cut to it. An RTTM or UEM that does not parse, or
that does not name the recording, leaves that recording out with the reason in the summary.
"""

from __future__ import annotations

from pathlib import Path

from agencerdas.stores.errors import AgencerdasError
from agencerdas.stores.segments import Segment

from ..discover import Recording
from ..rttm import parse_uem, read_rttm
from .common import Corpus, in_region, json_lines, resolve_audio, seconds, speaker_count_note, uem_in_region

def _optional_path(item: dict, key: str, where: str, manifest: Path) -> Path | None:
    value = item.get(key)
    if value in (None, "", "null", "-"):
        return None
    if not isinstance(value, str):
        raise AgencerdasError(f"{where}: field {key!r} must be a path, got {value!r}; fix the manifest, nothing "
                              "was written")
    return resolve_audio(value, manifest)


def _named(items: dict, stem: str, kind: str, path: Path) -> list:
    """The entries of ``stem`` in a per-file annotation (its only recording, whatever its name)."""
    if stem in items:
        return items[stem]
    if len(items) == 1:
        return next(iter(items.values()))
    if not items:
        return []
    raise AgencerdasError(f"{path}: the {kind} holds {len(items)} recordings and none is named {stem!r}")


def read_nemo(corpus: Corpus, manifests: list[Path], part: str | None) -> None:
    """Add the recordings of one split's NeMo manifests to ``corpus``."""
    rttms: dict[Path, dict] = {}  # each RTTM read once, however many regions name it
    for manifest in manifests:
        for where, item in json_lines(manifest):
            audio = item.get("audio_filepath")
            if not isinstance(audio, str) or not audio.strip():
                raise AgencerdasError(f"{where}: field 'audio_filepath' must be a path, got {audio!r}; fix the "
                                      "manifest, nothing was written")
            path = resolve_audio(audio, manifest)
            offset = seconds(item.get("offset") or 0, "offset", where)
            duration = item.get("duration")
            duration = None if duration is None else seconds(duration, "duration", where, positive=True)
            rttm, uem = (_optional_path(item, key, where, manifest) for key in ("rttm_filepath", "uem_filepath"))
            stem = path.stem
            region = corpus.audio(path, where, stem, offset or None, duration, part=part)
            if region is None:
                continue
            rec_id = stem if region == (None, None) else _region_id(stem, *region)
            try:
                turns = _region(_turns(rttms, rttm, stem), region) if rttm else None
                regions = _uem(uem, stem, region) if uem else None
            except AgencerdasError as exc:
                corpus.problem(where, f"recording {rec_id!r} left out: {exc}")
                continue
            corpus.add(Recording(rec_id, path, turns or None, regions, *region), where, part)
            if isinstance(item.get("num_speakers"), int) and (note := speaker_count_note(
                    rec_id, item["num_speakers"], turns)):
                corpus.note(where, note)


def _region_id(stem: str, offset_s: float | None, duration_s: float | None) -> str:
    """``STEM_STARTMS_ENDMS``, the id of a region of a file (``end``: to the end of the file)."""
    start = offset_s or 0.0
    end = "end" if duration_s is None else round((start + duration_s) * 1000)
    return f"{stem}_{round(start * 1000)}_{end}"


def _turns(cache: dict[Path, dict], rttm: Path, stem: str) -> list[Segment]:
    if rttm not in cache:
        cache[rttm] = read_rttm(rttm).turns
    return _named(cache[rttm], stem, "RTTM", rttm)


def _region(turns: list[Segment], region: tuple[float | None, float | None]) -> list[Segment]:
    offset, duration = region
    return sorted(turns) if offset is None else in_region(sorted(turns), offset, duration)


def _uem(uem: Path, stem: str, region: tuple[float | None, float | None]) -> list[tuple[float, float]] | None:
    regions = _named(parse_uem(uem), stem, "UEM", uem) or None
    offset, duration = region
    return regions if offset is None else uem_in_region(regions, offset, duration)
