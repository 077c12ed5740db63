"""`agencerdas export`: a view's recordings and supervisions written in a format other tools read, so they
can use exactly the data a model was trained and selected on.

Per split of the view (``train``, ``validation``), files named ``VIEW_..._SPLIT``:

- ``lhotse``: ``VIEW_recordings_SPLIT.jsonl.gz`` (one Recording per view recording: its whole audio file),
  ``VIEW_supervisions_SPLIT.jsonl.gz`` (its turns, in the file's time) and ``VIEW_cuts_SPLIT.jsonl.gz``
  (one cut per recording: the region of the file it is, its supervisions, and its UEM in ``custom``, as
  Lhotse has no UEM of its own).
- ``rttm``: ``VIEW_SPLIT.rttm`` (turns, in the recording's time), ``VIEW_SPLIT.uem`` (where a recording has
  one) and ``VIEW_SPLIT.lst`` (the recording ids, as a pyannote.database protocol lists them).

Turns are the annotation the labels entry keeps; pseudo labels (which keep frames, not turns) become turns
of their frames, flagged ``pseudo`` in Lhotse's ``custom``; a recording without labels has no turns.
Everything is read before the first file is written.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from agencerdas.stores import Store, ViewRecording, load_view
from agencerdas.stores.errors import AgencerdasError
from agencerdas.stores.segments import Segment

from ..rttm import file_safe, format_rttm, rttm_safe

FORMATS = ("lhotse", "rttm")


def _pseudo_turns(store: Store, rec: ViewRecording, shift_s: float, speakers: list[str]) -> list[Segment]:
    """Turns of a pseudo-labelled recording: each run of active frames of a column, in seconds."""
    activity = np.asarray(store.open("labels", rec.labels)["labels"][:]).astype(bool)
    turns = []
    for column, speaker in enumerate(speakers):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], activity[:, column].astype(np.int8), [0]])))
        turns += [Segment(round(a * shift_s, 6), round((b - a) * shift_s, 6), speaker) for a, b in edges.reshape(-1, 2)]
    return sorted(turns)


def _annotation(store: Store, rec: ViewRecording) -> tuple[list[Segment], list | None, bool]:
    """(turns, UEM regions, pseudo) of a view recording, in its own time."""
    if not rec.labels:
        return [], None, False
    attrs = store.attrs("labels", rec.labels)
    if attrs.get("pseudo"):
        return _pseudo_turns(store, rec, attrs["frame_shift_s"], attrs["speakers"]), None, True
    turns = [Segment(float(start), float(duration), str(speaker)) for start, duration, speaker in attrs["turns"] or []]
    return sorted(turns), attrs.get("uem"), False


def _lhotse_lines(rec_id: str, rec: ViewRecording, fattrs: dict, turns: list[Segment], uem, pseudo: bool):
    """(recording, supervisions, cut) dicts of one view recording, as Lhotse writes them."""
    rate, channels = int(fattrs["sample_rate"]), int(fattrs.get("channels", 1))
    samples = int(fattrs.get("file_samples") or round(rec.duration_s * rate))
    channel = 0 if channels == 1 else list(range(channels))
    recording = {"id": rec_id, "sources": [{"type": "file", "channels": list(range(channels)),
                                            "source": str(Path(rec.source).absolute())}],
                 "sampling_rate": rate, "num_samples": samples, "duration": samples / rate,
                 "channel_ids": list(range(channels))}
    offset = rec.offset_s or 0.0
    custom = {"pseudo": True} if pseudo else None

    def supervision(i: int, seg: Segment, shift: float) -> dict:
        sup = {"id": f"{rec_id}-{i:05d}", "recording_id": rec_id, "start": round(seg.start + shift, 6),
               "duration": seg.duration, "channel": channel, "speaker": seg.speaker}
        return {**sup, "custom": custom} if custom else sup

    supervisions = [supervision(i, seg, offset) for i, seg in enumerate(turns)]
    cut = {"id": rec_id, "start": offset, "duration": rec.duration_s, "channel": channel,
           "supervisions": [supervision(i, seg, 0.0) for i, seg in enumerate(turns)], "recording": recording,
           "type": "MonoCut" if channels == 1 else "MultiCut"}
    if uem:
        cut["custom"] = {"uem": [list(region) for region in uem]}
    return recording, supervisions, cut


def _jsonl_gz(path: Path, items: list[dict]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(item) + "\n" for item in items)


def export_view(store: Store, view_name: str, fmt: str, out: Path) -> dict[str, int]:
    """Write ``view_name``'s splits to ``out`` in ``fmt``; returns recordings per split written."""
    if fmt not in FORMATS:
        raise AgencerdasError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    view = load_view(store, view_name)
    files: dict[str, list[dict] | str] = {}
    counts: dict[str, int] = {}
    for part in ("train", "validation"):
        ids = view.split(part)
        if not ids:
            continue
        counts[part] = len(ids)
        lines = {"recordings": [], "supervisions": [], "cuts": []}
        rttm, uems = [], []
        for rec_id in ids:
            rec = view.recordings[rec_id]
            turns, uem, pseudo = _annotation(store, rec)
            if fmt == "lhotse":
                recording, sups, cut = _lhotse_lines(rec_id, rec, store.attrs("features", rec.features), turns, uem,
                                                     pseudo)
                lines["recordings"].append(recording)
                lines["supervisions"] += sups
                lines["cuts"].append(cut)
            else:
                rttm.append(format_rttm(rec_id, turns))
                uems += [f"{rttm_safe(rec_id)} 1 {a:.3f} {b:.3f}\n" for a, b in uem or []]
        if fmt == "lhotse":
            files.update({f"{file_safe(view.name)}_{kind}_{part}.jsonl.gz": items for kind, items in lines.items()})
        else:
            files[f"{file_safe(view.name)}_{part}.rttm"] = "".join(rttm)
            files[f"{file_safe(view.name)}_{part}.lst"] = "".join(f"{rttm_safe(r)}\n" for r in ids)
            if uems:
                files[f"{file_safe(view.name)}_{part}.uem"] = "".join(uems)
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, str):
            (out / name).write_text(content, encoding="utf-8")
        else:
            _jsonl_gz(out / name, content)
    return counts
