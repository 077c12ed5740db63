"""Writers of small corpus descriptions (pyannote.database protocol, Lhotse, NeMo, Kaldi) over the tone corpus,
so tests can read the same recordings every way a practitioner describes them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from agencerdas.pipeline.discover import Recording, discover
from agencerdas.pipeline.rttm import format_rttm
from tests.builders import make_corpus

PROTOCOL = "Tones.SpeakerDiarization.Tiny"


def tone_corpus(root: Path, n: int = 4, seconds: float = 6.0) -> list[Recording]:
    """The tone corpus with a UEM per recording (the whole file), read the audio-directory way: the reference
    every description must reproduce."""
    audio, rttm = make_corpus(root, n=n, seconds=seconds)
    uem = root / "uem"
    uem.mkdir()
    for path in sorted(audio.iterdir()):
        (uem / f"{path.stem}.uem").write_text(f"{path.stem} 1 0.000 {seconds:.3f}\n")
    found = discover(audio, rttm, uem)
    assert not found.problems and len(found.recordings) == n
    return found.recordings


def records(recordings: list[Recording]) -> list[tuple]:
    """What a reader must reproduce: id, resolved audio path, region, turns, UEM and split."""
    return [(r.rec_id, r.path.resolve(), r.offset_s, r.duration_s,
             [(_approx(s.start), _approx(s.duration), s.speaker) for s in r.segments or []] or None,
             [tuple(map(_approx, region)) for region in r.uem] if r.uem else None, r.split)
            for r in sorted(recordings, key=lambda r: r.rec_id)]


def _approx(value: float):
    return pytest.approx(value, abs=1e-6)


def _rttm(recs: list[Recording]) -> str:
    return "".join(format_rttm(r.rec_id, r.segments or []) for r in recs)


def _uem(recs: list[Recording]) -> str:
    return "".join(f"{r.rec_id} 1 {a:.3f} {b:.3f}\n" for r in recs for a, b in r.uem or [])


def write_protocol(root: Path, recs: list[Recording], subsets: dict[str, list[str]]) -> Path:
    """A database.yml declaring :data:`PROTOCOL` with ``subsets`` (subset -> recording ids); returns its path."""
    root.mkdir(parents=True, exist_ok=True)
    by_id = {r.rec_id: r for r in recs}
    lines = ["Databases:", "  Tones:"]
    lines += [f"    - {folder}/{{uri}}{suffix}" for folder in sorted({str(r.path.parent) for r in recs})
              for suffix in sorted({r.path.suffix for r in recs})]
    lines += ["Protocols:", "  Tones:", "    SpeakerDiarization:", "      Tiny:", "        scope: file"]
    for subset, ids in subsets.items():
        chosen = [by_id[i] for i in ids]
        (root / f"{subset}.lst").write_text("".join(f"{i}\n" for i in ids))
        (root / f"{subset}.rttm").write_text(_rttm(chosen))
        (root / f"{subset}.uem").write_text(_uem(chosen))
        lines += [f"        {subset}:", f"          uri: {subset}.lst", f"          annotation: {subset}.rttm",
                  f"          annotated: {subset}.uem"]
    (root / "database.yml").write_text("\n".join(lines) + "\n")
    return root / "database.yml"


def lhotse_recording(rec_id: str, path: Path) -> dict:
    info = sf.info(str(path))
    return {"id": rec_id, "sources": [{"type": "file", "channels": [0], "source": str(path)}],
            "sampling_rate": info.samplerate, "num_samples": info.frames, "duration": info.frames / info.samplerate,
            "channel_ids": [0]}


def _supervisions(rec: Recording, shift: float = 0.0) -> list[dict]:
    return [{"id": f"{rec.rec_id}-{i}", "recording_id": rec.rec_id, "start": seg.start + shift,
             "duration": seg.duration, "channel": 0, "speaker": seg.speaker} for i, seg in enumerate(rec.segments or [])]


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def write_lhotse(root: Path, recs: list[Recording], name: str = "tones") -> tuple[Path, Path]:
    """A RecordingSet and its SupervisionSet (jsonl); returns both paths."""
    return (write_jsonl(root / f"{name}_recordings.jsonl", [lhotse_recording(r.rec_id, r.path) for r in recs]),
            write_jsonl(root / f"{name}_supervisions.jsonl", [s for r in recs for s in _supervisions(r)]))


def write_cuts(root: Path, recs: list[Recording]) -> Path:
    """A CutSet of one cut per recording, each the whole file."""
    cuts = []
    for r in recs:
        recording = lhotse_recording(r.rec_id, r.path)
        cuts.append({"id": r.rec_id, "start": 0.0, "duration": recording["duration"], "channel": 0,
                     "supervisions": _supervisions(r), "recording": recording, "type": "MonoCut"})
    return write_jsonl(root / "tones_cuts.jsonl", cuts)


def write_nemo(root: Path, recs: list[Recording]) -> Path:
    """A NeMo manifest with one per-file RTTM and UEM per recording (whole files)."""
    lines = []
    for r in recs:
        (root / "nemo").mkdir(parents=True, exist_ok=True)
        (root / "nemo" / f"{r.rec_id}.rttm").write_text(_rttm([r]))
        (root / "nemo" / f"{r.rec_id}.uem").write_text(_uem([r]))
        lines.append({"audio_filepath": str(r.path), "offset": 0, "duration": sf.info(str(r.path)).duration,
                      "label": "infer", "text": "-", "num_speakers": len({s.speaker for s in r.segments}),
                      "rttm_filepath": f"nemo/{r.rec_id}.rttm", "uem_filepath": f"nemo/{r.rec_id}.uem"})
    return write_jsonl(root / "nemo_manifest.json", lines)


def write_kaldi(directory: Path, recs: list[Recording], turns: str = "rttm") -> Path:
    """A Kaldi data dir: wav.scp, uem, reco2num_spk, and the turns as ``rttm`` or as ``segments`` + ``utt2spk``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "wav.scp").write_text("".join(f"{r.rec_id} {r.path}\n" for r in recs))
    (directory / "uem").write_text(_uem(recs))
    (directory / "reco2num_spk").write_text("".join(f"{r.rec_id} {len({s.speaker for s in r.segments})}\n"
                                                    for r in recs))
    if turns == "rttm":
        (directory / "rttm").write_text(_rttm(recs))
    else:
        utts = [(f"{r.rec_id}-{s.speaker}-{round(s.start * 100):06d}", r.rec_id, s) for r in recs for s in r.segments]
        (directory / "segments").write_text("".join(f"{u} {rec} {s.start:.3f} {s.end:.3f}\n" for u, rec, s in utts))
        (directory / "utt2spk").write_text("".join(f"{u} {s.speaker}\n" for u, _, s in utts))
    return directory


def long_file(root: Path, recs: list[Recording]) -> tuple[Path, list[float]]:
    """The recordings' 16 kHz audio back to back in one file; returns it and each recording's start (s)."""
    parts, starts, t = [], [], 0.0
    for r in recs:
        audio, rate = sf.read(str(r.path), dtype="float32", always_2d=True)
        if rate != 16000:
            continue
        parts.append(audio[:, 0])
        starts.append(t)
        t += len(audio) / rate
    path = root / "long.wav"
    sf.write(str(path), np.concatenate(parts), 16000)
    return path, starts


def hostile_descriptions(root: Path, corpus: Path) -> Path:
    """Broken descriptions of the tone corpus under ``corpus`` (audio/, rttm/) for the hostile-input table:
    an unknown protocol's config, a negative supervision, a Kaldi command entry, an id declared twice and
    overlapping splits. Returns ``root``."""
    recs = discover(corpus / "audio", corpus / "rttm").recordings
    write_protocol(root / "protocol", recs, {"train": [recs[0].rec_id], "development": [recs[1].rec_id]})
    write_protocol(root / "overlap", recs, {"train": [recs[0].rec_id], "development": [recs[0].rec_id]})
    recordings, supervisions = write_lhotse(root / "negative", recs)
    items = [json.loads(line) for line in supervisions.read_text().splitlines()]
    write_jsonl(supervisions, [items[0], {**items[1], "duration": -0.5}, *items[2:]])
    write_kaldi(root / "kaldi-command", recs)
    (root / "kaldi-command" / "wav.scp").write_text(f"{recs[0].rec_id} sph2pipe -f wav {recs[0].path} |\n")
    line = {"audio_filepath": str(recs[0].path)}
    write_jsonl(root / "twice.json", [line, line])
    return root
