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

from agencerdas.pipeline.discover import printable
from agencerdas.pipeline.rttm import unique_file_names, write_rttm
from agencerdas.pipeline.statcache import StatCache
from agencerdas.pipeline.tasks import ensure_features
from agencerdas.stores import Store
from agencerdas.stores.errors import AgencerdasError


from .api import Diarizer


@dataclass
class DiarizeSummary:
    written: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    audio_s: float = 0.0
    seconds: float = 0.0

    def format(self) -> str:
        lines = [f"agencerdas diarize: {len(self.written)} RTTM(s) written, {len(self.failures)} failed, "
                 f"{self.audio_s / 60:.1f} min of audio in {self.seconds:.1f} s "
                 f"({self.audio_s / max(self.seconds, 1e-9):.1f}x real time)"]
        lines += [f"  {path}" for path in self.written[:10]]
        if len(self.written) > 10:
            lines.append(f"  ... and {len(self.written) - 10} more")
        # printable: a path that is not UTF-8 must not crash a strict-UTF-8 terminal here
        lines += [f"  FAILED {printable(name)}: {printable(reason)}" for name, reason in self.failures]
        return "\n".join(lines)


def diarize(audio: list[Path], model: Path, out: Path, store_url: str | None = None, device: str = "auto",
            **speakers) -> DiarizeSummary:
    """Write ``out/<id>.rttm`` for each audio file; a bad file is reported, the others still run. ``speakers``:
    ``clustering`` and the numbers of speakers, as :meth:`Diarizer.from_checkpoint` takes them."""
    start = time.perf_counter()
    diarizer = Diarizer.from_checkpoint(model, device, **speakers)
    scratch = None if store_url else tempfile.mkdtemp(prefix="agencerdas-diarize-")
    store = Store(store_url or scratch, create=True)
    cache = StatCache() if store_url else None  # a scratch store is gone after this run: nothing to find again
    summary = DiarizeSummary()
    try:
        targets = unique_file_names([Path(path).stem for path in audio], ".rttm")
        for path, target in zip(audio, targets):
            try:
                key, attrs = ensure_features(store, Path(path), diarizer.features, cache)
                feats = store.open("features", key)["feats"]
                segments, _ = diarizer.diarize_features(feats, attrs["frames"], attrs["duration_s"])
                write_rttm(Path(out) / target, Path(path).stem, segments)
                summary.written.append(Path(out) / target)
                summary.audio_s += attrs["duration_s"]
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
