"""Store layout (section 6): bytes on disk and read speed per dtype, codec and chunk length.

Two measurements:

* :func:`store_usage`: the bench's store as built, grouped by the (dtype, codec,
  chunk) setting its arrays use: bytes on disk vs the raw float32 size of the same
  features (``ratio`` = raw float32 bytes / bytes on disk);
* :func:`codec_section`: the same float32 log-mel features (computed afresh, not
  read back from the float16 store, so float32 keeps its real mantissa) written
  through ``Store.write`` in every combination of :data:`DTYPES`, :data:`CODECS`
  and :data:`CHUNKS`, then read back as random training windows (windows/s) and as
  whole entries (MB/s of float32), the two ways the trainer reads.

Reads only need to outrun training. The trainer's loader reads every entry whole
into its per-worker cache and cuts windows from memory, so the read that matters
is the whole-entry one: a setting is *fast enough* when one process reads whole
entries at :data:`DEMAND_MARGIN` times the fastest rate at which this run's
training consumed features (MB/s of float32 frames: windows/s of every preset's
real-loader steps, and the GPU's when measured, times the window's size); without
that figure, at :data:`FALLBACK_FRACTION` of the fastest setting's rate. The
recommendation is the smallest fast-enough setting (among those within
:data:`SIZE_TIE` of the smallest, the fastest at window reads); the current
setting should change only when it is not fast enough or more than
:data:`SIZE_SLACK` larger.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import zarr

from agencerdas.pipeline.audio import stream_mono
from agencerdas.pipeline.features import FeatureConfig, LogMel
from agencerdas.pipeline.tasks import CHUNK_FRAMES
from agencerdas.stores import ArraySpec, Store, read_rows
from agencerdas.stores import default_codec

from .measure import repeat_for

DTYPES = ("float16", "float32")
CODECS: dict[str, Callable[[], Any]] = {
    "blosc-lz4-shuffle-5": lambda: zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    "zstd-1": lambda: zarr.codecs.ZstdCodec(level=1),
    "zstd-3": lambda: zarr.codecs.ZstdCodec(level=3),
    "none": lambda: None,
}
CHUNKS = (2000, 8000, 16000)
#: Fast enough = whole-entry reads in one process at this multiple of training's fastest consumption.
DEMAND_MARGIN = 4.0
#: Without a consumption figure: fast enough = this fraction of the fastest setting's whole-entry reads.
FALLBACK_FRACTION = 0.5
#: Sizes within this factor of the smallest count as a tie, broken by read speed.
SIZE_TIE = 1.02
#: The current setting stays while it is fast enough and within this factor of the best size.
SIZE_SLACK = 1.05
#: Whole-entry reads are timed this many times; the best pass counts (load spikes only slow a pass down).
WHOLE_READ_PASSES = 3


def codec_name(codec: Any) -> str:
    """Short name of a zarr codec (``blosc-lz4-shuffle-5``, ``zstd-3``, ``none``)."""
    if codec is None:
        return "none"
    if isinstance(codec, zarr.codecs.BloscCodec):
        return f"blosc-{codec.cname.value}-{codec.shuffle.value}-{codec.clevel}"
    if isinstance(codec, zarr.codecs.ZstdCodec):
        return f"zstd-{codec.level}"
    return type(codec).__name__


def current_setting() -> dict[str, Any]:
    """The (dtype, codec, chunk) that ``agencerdas features`` writes today."""
    return {"dtype": FeatureConfig().dtype, "codec": codec_name(default_codec()), "chunk": CHUNK_FRAMES}


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def store_usage(store_url: str) -> dict[str, Any]:
    """Bytes on disk of a local store's features per setting in use, vs raw float32; labels bytes."""
    store = Store(store_url, create=False)
    settings: dict[str, dict[str, Any]] = {}
    for key in store.keys("features"):
        array = store.open("features", key)["feats"]
        codecs = array.compressors
        name = f"{array.dtype} {codec_name(codecs[0] if codecs else None)} chunk {array.chunks[0]}"
        entry = settings.setdefault(name, {"entries": 0, "frames": 0, "bytes": 0, "raw_float32_bytes": 0})
        entry["entries"] += 1
        entry["frames"] += array.shape[0]
        entry["bytes"] += _disk_bytes(Path(store.root) / "features" / key)
        entry["raw_float32_bytes"] += array.shape[0] * array.shape[1] * 4
    for entry in settings.values():
        entry["ratio"] = entry["raw_float32_bytes"] / max(entry["bytes"], 1)
    return {"settings": settings, "labels_bytes": _disk_bytes(Path(store.root) / "labels")}


def _float32_features(paths: list[Path], max_frames: int) -> list[np.ndarray]:
    """Float32 log-mel of the first recordings of ``paths``, ``max_frames`` base frames in all."""
    cfg = FeatureConfig(dtype="float32")
    logmel, arrays, total = LogMel(cfg), [], 0
    for path in paths:
        if total >= max_frames:
            break
        blocks = stream_mono(Path(path), cfg.sample_rate, CHUNK_FRAMES * cfg.frame_shift_s)
        feats = np.concatenate(list(logmel.process(blocks, CHUNK_FRAMES)))[: max_frames - total]
        arrays.append(feats)
        total += len(feats)
    return arrays


def demand_mb_s(windows_per_s: float | None, window: int, n_mels: int) -> float | None:
    """Training's consumption in MB/s of float32 features, from windows/s of ``window`` base frames."""
    return windows_per_s * window * n_mels * 4 / 2**20 if windows_per_s else None


def _measure(root: Path, features: list[np.ndarray], dtype: str, codec: tuple[str, Callable[[], Any]], chunk: int,
             window: int, budget_s: float) -> dict[str, Any]:
    """Write ``features`` with one setting (``codec`` = (name, factory)), then time window and whole-entry reads."""
    store = Store(root)
    spec = ArraySpec(features[0].shape[1], dtype, chunk, codec[1]())
    start = time.perf_counter()
    for index, feats in enumerate(features):
        with store.write("features", f"{index:032x}", {}) as writer:
            writer.create("feats", spec)
            for offset in range(0, len(feats), chunk):
                writer.append("feats", feats[offset : offset + chunk])
    write_s = time.perf_counter() - start
    arrays = [store.open("features", key)["feats"] for key in store.keys("features")]
    lengths = [a.shape[0] for a in arrays]
    rng = np.random.default_rng(0)

    def read_window() -> int:
        i = int(rng.choice(len(arrays), p=np.asarray(lengths) / sum(lengths)))
        read_rows(arrays[i], int(rng.integers(0, max(1, lengths[i] - window + 1))), window).astype(np.float32)
        return 1

    windows = repeat_for(read_window, budget_s, min_items=5, skip=0)
    whole_s = float("inf")
    for _ in range(WHOLE_READ_PASSES):
        start = time.perf_counter()
        for array in arrays:
            np.asarray(array[:], dtype=np.float32)
        whole_s = min(whole_s, time.perf_counter() - start)
    raw = sum(f.size for f in features) * 4
    disk = _disk_bytes(Path(root) / "features")
    return {"dtype": dtype, "codec": codec[0], "chunk": chunk, "bytes": disk, "raw_float32_bytes": raw,
            "ratio": raw / max(disk, 1), "write_s": write_s, "window_reads_per_s": windows.per_s,
            "whole_read_mb_per_s": raw / 2**20 / max(whole_s, 1e-9)}


def _recommend(matrix: list[dict[str, Any]], current: dict[str, Any], demand_mb_s: float | None) -> dict[str, Any]:
    """Pick the setting to use; ``demand_mb_s`` = training's fastest consumption (MB/s of float32 features) or None."""
    speed = "whole_read_mb_per_s"
    fastest = max(matrix, key=lambda row: row[speed])
    floor = DEMAND_MARGIN * demand_mb_s if demand_mb_s else FALLBACK_FRACTION * fastest[speed]
    eligible = [row for row in matrix if row[speed] >= floor] or [fastest]
    smallest = min(row["bytes"] for row in eligible)
    best = max((row for row in eligible if row["bytes"] <= SIZE_TIE * smallest), key=lambda r: r["window_reads_per_s"])
    now = next(row for row in matrix if all(row[k] == current[k] for k in ("dtype", "codec", "chunk")))
    keep = now in eligible and now["bytes"] <= SIZE_SLACK * smallest
    pick = lambda row: {k: row[k] for k in ("dtype", "codec", "chunk", "ratio", "window_reads_per_s", speed)}  # noqa: E731
    why = (f"{DEMAND_MARGIN:g} x training's fastest consumption of {demand_mb_s:.1f} MB/s" if demand_mb_s
           else f"{FALLBACK_FRACTION:.0%} of the fastest setting")
    return {"rule": f"smallest on disk among settings reading whole entries at >= {floor:.0f} MB/s per process ({why})",
            "demand_mb_per_s": demand_mb_s, "floor_mb_per_s": floor, "eligible": len(eligible),
            "best": pick(best), "current": pick(now), "smallest": pick(min(matrix, key=lambda r: r["bytes"])),
            "fastest": pick(fastest), "change": not keep}


def codec_section(paths: list[Path], work: Path, window: int, max_frames: int, budget_s: float,
                  demand: float | None, progress: Callable[[str], None]) -> dict[str, Any]:
    """The dtype x codec x chunk matrix on up to ``max_frames`` base frames of the corpus, and a recommendation
    (``demand``: the fastest rate, in windows/s of ``window`` base frames, at which training consumed windows
    in this run, or None)."""
    current = current_setting()
    codecs = dict(CODECS)
    codecs.setdefault(current["codec"], default_codec)  # a codec chosen since this matrix was written
    chunks = sorted({*CHUNKS, current["chunk"]})
    features = _float32_features(paths, max_frames)
    flat = np.concatenate(features)
    error = flat - flat.astype(np.float16).astype(np.float32)
    progress(f"store matrix: {len(DTYPES) * len(codecs) * len(chunks)} settings on {len(flat)} frames")
    matrix = []
    for dtype in DTYPES:
        for codec in codecs:
            for chunk in chunks:
                root = Path(work) / "codec-matrix" / f"{dtype}-{codec}-{chunk}"
                shutil.rmtree(root, ignore_errors=True)
                matrix.append(_measure(root, features, dtype, (codec, codecs[codec]), chunk, window, budget_s))
                shutil.rmtree(root, ignore_errors=True)
    return {"frames": int(len(flat)), "window_base_frames": window, "current": current, "matrix": matrix,
            "float16_error": {"max_abs": float(np.abs(error).max()), "rms": float(np.sqrt((error**2).mean())),
                              "feature_std": float(flat.std())},
            "recommendation": _recommend(matrix, current, demand_mb_s(demand, window, flat.shape[1]))}
