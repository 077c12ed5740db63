"""`agencerdas diarize`: RTTM for new audio files of any length with a trained model.

Features go through the same pipeline and store as training (a temporary store
unless one is given), so memory stays bounded by one block of audio plus the
output, whatever the file's length.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from agencerdas.pipeline.audio import audio_file
from agencerdas.pipeline.discover import printable
from agencerdas.pipeline.rttm import unique_file_names, write_rttm
from agencerdas.pipeline.statcache import StatCache
from agencerdas.pipeline.tasks import ensure_features
from agencerdas.stores import Store
from agencerdas.scoring.cluster import speaker_count_notes
from agencerdas.stores.errors import AgencerdasError

from .api import Diarizer
from .pretrained import PretrainedDiarizer
from .voices import RATE, decoded


@dataclass
class DiarizeSummary:
    written: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    # (file, why) for each file written with another number of speakers than asked (clustering could not give it)
    speaker_notes: list[tuple[str, str]] = field(default_factory=list)
    audio_s: float = 0.0
    seconds: float = 0.0

    def format(self) -> str:
        unmet = (f" ({len(self.speaker_notes)} with another number of speakers than asked)"
                 if self.speaker_notes else "")
        lines = [f"agencerdas diarize: {len(self.written)} RTTM(s) written{unmet}, {len(self.failures)} failed, "
                 f"{self.audio_s / 60:.1f} min of audio in {self.seconds:.1f} s "
                 f"({self.audio_s / max(self.seconds, 1e-9):.1f}x real time)"]
        lines += [f"  {path}" for path in self.written[:10]]
        if len(self.written) > 10:
            lines.append(f"  ... and {len(self.written) - 10} more")
        # printable: a path that is not UTF-8 must not crash a strict-UTF-8 terminal here
        lines += [f"  SPEAKERS {printable(name)}: {note}" for name, note in self.speaker_notes]
        lines += [f"  FAILED {printable(name)}: {printable(reason)}" for name, reason in self.failures]
        return "\n".join(lines)


def diarize(audio: list[Path], model: Path | None, out: Path, store_url: str | None = None, device: str = "auto",
            **speakers) -> DiarizeSummary:
    """Write ``out/<id>.rttm`` for each audio file with the model of checkpoint ``model``, or with the pipeline
    that needs no trained model when ``model`` is None (:mod:`.pretrained`); a file that cannot be decoded is
    reported, the others still run, and a file written with another number of speakers than asked is noted.
    ``speakers``: ``clustering``, the numbers of speakers, the chunks, the embeddings, the count rule and the
    VAD, as :meth:`Diarizer.from_checkpoint` takes them (the pretrained pipeline: the numbers, ``count`` and
    ``embeddings``).

    A path that is not a regular file (missing, a directory, a pipe such as ``<(...)``, a device) raises
    AgencerdasError naming it before the model loads."""
    start = time.perf_counter()
    for path in audio:
        audio_file(Path(path))
    scratch = None if store_url or model is None else tempfile.mkdtemp(prefix="agencerdas-diarize-")
    cache = StatCache() if store_url else None  # a scratch store is gone after this run: nothing to find again
    label = _pretrained(device, speakers) if model is None else _with_model(model, device, store_url or scratch,
                                                                            cache, speakers)
    summary = DiarizeSummary()
    try:
        targets = unique_file_names([Path(path).stem for path in audio], ".rttm")
        for path, target in zip(audio, targets):
            try:
                with speaker_count_notes() as notes:
                    segments, duration_s = label(Path(path))
                write_rttm(Path(out) / target, Path(path).stem, segments)
                summary.written.append(Path(out) / target)
                summary.speaker_notes += [(str(path), note) for note in notes]
                summary.audio_s += duration_s
            except AgencerdasError as exc:
                summary.failures.append((str(path), str(exc).removeprefix(f"{path}: ")))
            except OSError as exc:  # disk full, permission denied while writing the RTTM
                summary.failures.append((str(path), f"cannot write {target}: {exc.strerror or exc}"))
    finally:
        if cache:
            cache.save()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    summary.seconds = time.perf_counter() - start
    return summary


def _with_model(model: Path, device: str, store_url: str, cache: StatCache | None, speakers: dict):
    """``label(path) -> (turns, duration_s)`` with a trained model; features go through the store."""
    diarizer = Diarizer.from_checkpoint(model, device, **speakers)
    store = Store(store_url, create=True)

    def label(path: Path):
        key, attrs = ensure_features(store, path, diarizer.features, cache)
        feats = store.open("features", key)["feats"]
        with decoded(path, needed=diarizer.loaded.voices.needs_audio) as pcm:
            segments, _ = diarizer.diarize_features(feats, attrs["frames"], attrs["duration_s"], pcm)
        return segments, attrs["duration_s"]

    return label


def _pretrained(device: str, speakers: dict):
    """``label(path) -> (turns, duration_s)`` with the pipeline that needs no trained model."""
    choices = {k: v for k, v in speakers.items() if k in ("num_speakers", "min_speakers", "max_speakers")
               or (k == "count" and v) or (k == "embeddings" and v not in (None, "head"))}
    pipe = PretrainedDiarizer.load(device, **choices)

    def label(path: Path):
        with decoded(path) as pcm:
            duration_s = len(pcm.samples) / RATE
            return pipe.diarize_audio(pcm, duration_s)[0], duration_s

    return label
