"""``run_bench``: every section in order on one corpus, then the JSON, markdown and PNG reports.

Sections: 1 feature build, 2 reruns, 3 window reads, 4 loader stall, 5 memory,
6 store layout, 7 durability (what fsync costs per commit), 8 pretrained voices (what the
pretrained speaker encoder and VAD cost a diarization pipeline), and the GPU matrix.
Timed work runs one thing at a time; builds and training run in fresh processes
(see :mod:`.isolated`). Per-run scratch (stores, stat caches, the corpus copy) lives
in ``<work_dir>/run`` and is removed at the end; generated corpora stay in
``<work_dir>/corpora`` for the next run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from agencerdas.stores.errors import AgencerdasError

from agencerdas.training.config import PRESETS, resolve

from .build import feature_section, memory_section, rerun_section
from .codecs import codec_section, current_setting, store_usage
from .corpus import SIZES, Corpus, generated_corpus, working_copy
from .durability import durability_section
from .reads import read_section
from .report import chart, file_stem, machine, markdown, targets, versions
from .steps import PRESETS as STEP_PRESETS
from .steps import gpu_section, loader_section
from .voices import voices_section

SCHEMA_VERSION = 1
VIEW = "default"


def default_work_dir() -> Path:
    """``$AGENCERDAS_CACHE_DIR/bench`` (default ``~/.cache/agencerdas/bench``): outside the repository."""
    return Path(os.environ.get("AGENCERDAS_CACHE_DIR") or Path.home() / ".cache" / "agencerdas") / "bench"


class _Progress:
    """One line per step on stderr: ``[bench  12.3 s] 3/6 window reads: ...``."""

    def __init__(self, enabled: bool):
        self.enabled, self.start, self.section = enabled, time.perf_counter(), ""

    def begin(self, section: str) -> None:
        self.section = section

    def __call__(self, message: str) -> None:
        if self.enabled:
            elapsed = time.perf_counter() - self.start
            print(f"[bench {elapsed:6.1f} s] {self.section}: {message}", file=sys.stderr, flush=True)


def _skippable(section: str, progress: _Progress, run, *args: Any) -> dict[str, Any]:
    """Run a section that needs labelled training data; a corpus that cannot train skips it with the reason."""
    progress.begin(section)
    try:
        return run(*args)
    except AgencerdasError as exc:
        progress(f"skipped: {exc}")
        return {"skipped": str(exc)}


def _demand(result: dict[str, Any]) -> float | None:
    """The fastest rate (windows/s) at which this run's training steps consumed windows from the real loader."""
    rates = [r["batch"] / r["real_step_s"] for p, r in result["loader"].items() if p in STEP_PRESETS]
    rates += [e["real_loader"]["windows_per_s"] for p, e in result["gpu"].items()
              if p in STEP_PRESETS and "windows_per_s" in e.get("real_loader", {})]
    return max(rates) if rates else None


def run_bench(size: str = "small", jobs: int = 2, audio_dir: Path | None = None, rttm_dir: Path | None = None,
              gpu: bool = False, out_dir: Path = Path("bench/results"), work_dir: Path | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Benchmark the feature store, pipeline and trainer on this machine; write and return the results.

    ``size``: ``tiny`` (seconds; for tests), ``small`` (minutes) or ``full`` (100 recordings
    of 1-4 min; generated once and cached in ``work_dir``); ``audio_dir`` (+ ``rttm_dir``)
    benchmarks a given corpus instead. ``jobs``: feature-build processes. ``gpu``: also
    run the CUDA precision matrix (recorded as not available without CUDA).

    Returns every raw number plus ``targets`` (pass/miss per goal), ``table`` (markdown)
    and ``files`` (the ``.json``, ``.md`` and ``.png`` written to ``out_dir`` as
    ``<YYYY-MM-DD>-<host>-<size>.*``). Raises AgencerdasError for invalid arguments.
    """
    if size not in SIZES:
        raise AgencerdasError(f"unknown bench size {size!r}; choose one of {', '.join(SIZES)}")
    if jobs < 1:
        raise AgencerdasError(f"jobs must be at least 1, got {jobs}")
    spec = SIZES[size]
    work_dir = Path(work_dir) if work_dir else default_work_dir()
    scratch = work_dir / "run"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    say = _Progress(progress)
    overrides = [f"window={spec.window}"] if spec.window else []
    result: dict[str, Any] = {
        "schema": SCHEMA_VERSION, "size": size, "jobs": jobs, "date": time.strftime("%Y-%m-%d"),
        "created_at": time.time(), "machine": machine(), "versions": versions(),
        "config": {"size": dataclasses.asdict(spec), "jobs": jobs, "gpu_requested": gpu, "work_dir": str(work_dir),
                   "overrides": overrides, "store_setting": current_setting(),
                   "presets": {p: resolve(p, overrides).to_dict() for p in STEP_PRESETS}, "preset_deltas": PRESETS},
    }
    start = time.perf_counter()
    try:
        say.begin("0/8 corpus")
        if audio_dir is not None:
            corpus = Corpus(Path(audio_dir), Path(rttm_dir) if rttm_dir else None, "given directory")
        else:
            say(f"{spec.recordings} recordings of {spec.min_duration_s:g}-{spec.max_duration_s:g} s (cached when present)")
            corpus = generated_corpus(spec, work_dir / "corpora", jobs, progress)
        copy = working_copy(corpus.describe(), scratch / "corpus")
        result["corpus"] = corpus.to_dict()
        say.begin("1/8 feature build")
        result["features"] = feature_section(copy, scratch, jobs, say)
        say.begin("2/8 reruns")
        result["rerun"] = rerun_section(copy, result["features"], say)
        store_url = result["features"]["store"]
        optimized = resolve("optimized", overrides)
        result["reads"] = _skippable("3/8 window reads", say, read_section, store_url, VIEW, optimized,
                                     spec.read_budget_s, spec.notebook_items, say)
        result["loader"] = _skippable("4/8 loader stall", say, loader_section, store_url, VIEW, overrides,
                                      spec.step_budget_s, scratch, say, spec.isolate_training)
        say.begin("5/8 memory")
        result["memory"] = {
            "feature_stage": memory_section(scratch, work_dir / "corpora", spec.memory_minutes, say),
            "training": {p: {k: r[k] for k in ("peak_rss_mb", "workers_peak_rss_mb", "cuda_peak_mb")}
                         for p, r in result["loader"].items() if p in STEP_PRESETS},
        }
        say.begin("GPU")
        result["gpu"] = gpu_section(store_url, VIEW, overrides, spec.gpu_steps, scratch, gpu, say)
        say.begin("6/8 store")
        result["store"] = {"usage": store_usage(store_url),
                           "codecs": codec_section(copy.audio_files(), scratch, optimized.window_base_frames,
                                                   spec.matrix_frames, spec.matrix_budget_s, _demand(result), say)}
        say.begin("7/8 durability")
        result["durability"] = durability_section(scratch, size, say)
        result["voices"] = _skippable("8/8 pretrained voices", say, voices_section, store_url, VIEW, overrides,
                                      copy.audio_files(), scratch, spec.voices_minutes, spec.isolate_training, say)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result["wall_s"] = time.perf_counter() - start
    result["machine"]["load_average_1m_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return _write(result, Path(out_dir))


def _write(result: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Evaluate the targets and write ``.json``, ``.md`` and ``.png``; returns the completed result."""
    goals = targets(result)
    result["targets"] = [goal.to_dict() for goal in goals]
    result["table"] = markdown(result, goals)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = file_stem(result)
    paths = {kind: out_dir / f"{stem}.{kind}" for kind in ("json", "md", "png")}
    result["files"] = {kind: str(path) for kind, path in paths.items()}
    paths["md"].write_text(result["table"] + "\n", encoding="utf-8")
    chart(result, goals, paths["png"])
    paths["json"].write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    return result
