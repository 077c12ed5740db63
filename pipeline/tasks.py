"""One recording's work, run inside a worker process: decode → log-mel → labels → store."""

from __future__ import annotations

import platform
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agencerdas.stores import ArraySpec, Store, default_codec, feature_key, hash_file
from agencerdas.stores.errors import AgencerdasError

from .audio import probe, region_frames, stream_mono
from .discover import NOT_UTF8, is_utf8, printable
from .features import FeatureConfig, LogMel
from .labels import LabelConfig, frame_labels
from .pseudo import AudioRegion, PseudoLabeler, by_first_appearance
from .rttm import Segment
from .statcache import StatCache

#: Frames per stored chunk (80 s at 10 ms); also the block size of feature work. See README "Store".
CHUNK_FRAMES = 8000


@dataclass
class Task:
    """What one worker must do for one recording; plain data so it pickles to any backend."""

    rec_id: str
    path: str
    store_url: str
    storage_options: dict
    feature_config: dict
    label_config: dict
    features_key: str
    labels_key: str | None
    need_features: bool
    need_labels: bool
    segments: list[Segment] | None = None
    uem: list[tuple[float, float]] | None = None
    pseudo: PseudoLabeler | None = None  # make pseudo labels with it instead of reading segments
    offset_s: float | None = None  # a region of the file (seconds; None: the whole file)
    duration_s: float | None = None


@dataclass
class TaskResult:
    """What happened to one recording; ``status`` is computed, labels-only or failed."""

    rec_id: str
    path: str
    status: str
    reason: str = ""
    frames: int = 0
    duration_s: float = 0.0
    speakers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    startup_s: float = 0.0


_WORKER_WARM = False


def _warm_up(config: FeatureConfig) -> float:
    """Pay the one-off start-up cost (librosa's filter bank and its imports, ~0.9 s) once per worker
    process; returns its seconds."""
    global _WORKER_WARM
    if _WORKER_WARM:
        return 0.0
    start = time.perf_counter()
    list(LogMel(config).process([np.zeros(config.sample_rate, dtype=np.float32)], 1000))
    _WORKER_WARM = True
    return time.perf_counter() - start


def provenance() -> dict[str, Any]:
    """Library versions and host recorded with every entry."""
    import librosa
    import soundfile
    import zarr

    return {
        "librosa": librosa.__version__,
        "soundfile": soundfile.__version__,
        "zarr": zarr.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
    }


def write_features(store: Store, task: Task, config: FeatureConfig) -> tuple[int, float]:
    """Compute and commit the features entry (of the whole file, or of the task's region of it); returns
    (frames, duration in seconds)."""
    info = probe(Path(task.path))
    first, samples = region_frames(info, task.offset_s, task.duration_s)
    attrs = {
        "recording_id": task.rec_id,
        "source_path": task.path,
        "duration_s": samples / info.sample_rate,
        "offset_s": first / info.sample_rate if task.offset_s is not None else None,
        "file_samples": info.frames,
        "sample_rate": info.sample_rate,
        "channels": info.channels,
        "frame_shift_s": config.frame_shift_s,
        "feature_config": config.to_dict(),
        "versions": provenance(),
        "created_at": time.time(),
    }
    blocks = stream_mono(Path(task.path), config.sample_rate, CHUNK_FRAMES * config.frame_shift_s, task.offset_s,
                         task.duration_s)
    frames = 0
    with store.write("features", task.features_key, attrs) as writer:
        # Expected length from the header: writes go in place, no resize per block.
        hint = -(-samples * config.sample_rate // (info.sample_rate * config.hop_length))
        writer.create("feats", ArraySpec(config.n_mels, config.dtype, CHUNK_FRAMES, default_codec()), frames_hint=hint)
        for block in LogMel(config).process(blocks, CHUNK_FRAMES):
            writer.append("feats", block)
            frames += len(block)
        writer.set_attrs({"frames": frames})
    return frames, attrs["duration_s"]


def write_labels(store: Store, task: Task, frames: int, frame_shift_s: float) -> tuple[list[str], list[str]]:
    """Compute and commit the labels entry (from RTTM turns: one column per annotated speaker; or pseudo
    labels from the stored features when ``task.pseudo``: the labeller's columns); returns (speakers,
    notes for the report)."""
    config = LabelConfig(**task.label_config)
    notes = []
    if task.pseudo is not None:
        logmel = np.asarray(store.open("features", task.features_key)["feats"][:frames])
        labelled = task.pseudo(logmel, AudioRegion(task.path, task.offset_s, task.duration_s))
        # Any labeller's columns in first-appearance order (the default labeller already orders them,
        # except that a cluster owning no frame now moves to the end: same speakers, same PIT loss).
        activity = by_first_appearance(labelled, labelled.shape[1])
        speakers = [f"pseudo{i}" for i in range(activity.shape[1]) if activity[:, i].any()]
    else:
        segments = _inside_uem(task.segments or [], task.uem, task.path, frames * frame_shift_s)
        labels = frame_labels(segments, frames, frame_shift_s)
        activity, speakers = labels.activity, labels.speakers
        if labels.clipped_seconds > 0.005:
            notes.append(f"{labels.clipped_seconds:.2f} s of annotated speech lies past the end of the audio")
    attrs = {
        "recording_id": task.rec_id,
        "features_key": task.features_key,
        "speakers": speakers,
        "n_speakers": len(speakers),
        "frame_shift_s": frame_shift_s,
        "pseudo": task.pseudo is not None,
        "pseudo_method": task.pseudo.describe() if task.pseudo is not None else None,
        "uem": [list(r) for r in task.uem] if task.uem else None,
        # The annotation itself, unquantised: what validation and evaluate score against.
        "turns": None if task.pseudo is not None else [[s.start, s.duration, s.speaker] for s in task.segments or []],
        "label_config": config.to_dict(),
        "created_at": time.time(),
    }
    with store.write("labels", task.labels_key, attrs) as writer:
        spec = ArraySpec(activity.shape[1], "uint8", CHUNK_FRAMES, default_codec())
        writer.create("labels", spec, frames_hint=frames)
        writer.append("labels", activity)
    return speakers, notes


def _inside_uem(segments: list[Segment], uem: list[tuple[float, float]] | None, path: str,
                duration_s: float | None = None) -> list[Segment]:
    """Turns cut to the UEM's scored regions (all turns when there is no UEM)."""
    if not uem:
        return segments
    end_s = float("inf") if duration_s is None else duration_s
    if sum(max(0.0, min(end, end_s) - start) for start, end in uem) <= 0:
        raise AgencerdasError(
            f"{path}: its UEM excludes the whole recording (no scored time inside its {end_s:.2f} s); "
            "fix the UEM or remove it"
        )
    cut = []
    for seg in segments:
        for start, end in uem:
            lo, hi = max(seg.start, start), min(seg.end, end)
            if hi > lo:
                cut.append(Segment(lo, hi - lo, seg.speaker))
    return cut


def run_task(task: Task) -> TaskResult:
    """Do one recording's work; every failure becomes a failed result, never a lost batch."""
    start = time.perf_counter()
    config = FeatureConfig(**task.feature_config)
    result = TaskResult(task.rec_id, task.path, "computed")
    try:
        # A labels-only task never touches librosa: no start-up cost for an RTTM edit.
        result.startup_s = _warm_up(config) if task.need_features else 0.0
        store = Store(task.store_url, task.storage_options, create=False)
        if task.need_features:
            result.frames, result.duration_s = write_features(store, task, config)
        else:
            result.status = "labels-only"
            attrs = store.attrs("features", task.features_key)
            result.frames, result.duration_s = attrs["frames"], attrs["duration_s"]
        if task.need_labels:
            result.speakers, result.notes = write_labels(store, task, result.frames, config.frame_shift_s)
    except AgencerdasError as exc:
        result.status, result.reason = "failed", str(exc).removeprefix(f"{task.path}: ")
    except OSError as exc:  # disk full, permission denied: the user's environment, not a bug
        result.status, result.reason = "failed", f"I/O error: {exc}"
    except Exception as exc:  # a bug in our code: keep the traceback for the report
        result.status = "failed"
        result.reason = f"internal error {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    result.seconds = time.perf_counter() - start - result.startup_s
    return result


def ensure_features(store: Store, path: Path, config: FeatureConfig,
                    cache: StatCache | None = None) -> tuple[str, dict[str, Any]]:
    """Features of one audio file in ``store`` (computed in this process when missing).

    Returns (features key, entry attributes). Used to diarize or evaluate new audio
    through the same cache the training corpus uses; with a stat ``cache`` an unchanged
    file is not even read to find its key. A path that is not UTF-8 is refused: it is stored as text.
    """
    if not is_utf8(path):
        raise AgencerdasError(f"{printable(str(path))}: {NOT_UTF8}")
    try:
        key = feature_key(cache.content_hash(path) if cache else hash_file(path), config.to_dict())
    except OSError as exc:
        raise AgencerdasError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not store.has("features", key):
        task = Task(Path(path).stem, str(path), store.url, store.storage_options, config.to_dict(), {}, key,
                    None, True, False)
        write_features(store, task, config)
    return key, store.attrs("features", key)
