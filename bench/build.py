"""Feature build (section 1), reruns (section 2) and the feature stage's memory (section 5).

Every build runs in a fresh interpreter (:mod:`.isolated`), as a user's command
would: the naive notebook loop, ``build_features`` with 1 and N jobs into fresh
stores and stat caches, Lhotse when installed, then reruns of the N-job build on
an unchanged, a renamed and an RTTM-edited corpus. Seconds are wall time of the
work itself (after the interpreter and the package imports, before exit); audio
seconds are decoded audio, so ``x_real_time = audio_s / seconds``. ``cpu_s`` is the
CPU time of the same span, the step's process and every worker it started together,
reported per hour of audio (``cpu_s_per_audio_h``) beside the wall time.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from agencerdas.pipeline.features import FeatureConfig

from .corpus import Corpus, edit_one_rttm, noise_and_tones, rename_all
from .isolated import run_isolated
from .measure import cpu_seconds, ratio

Progress = Callable[[str], None]

#: What the Lhotse row needs (the ``bench`` extra): Lhotse, and lilcom for its ``LilcomChunkyWriter``.
LHOTSE_MODULES = ("lhotse", "lilcom")


# --------------------------------------------------------------- child steps


def naive_child(paths: list[str], feature_config: dict) -> dict[str, Any]:
    """The notebook way: one process, ``librosa.load`` + mel spectrogram + log per file, nothing stored."""
    import librosa
    import numpy as np

    cfg = FeatureConfig(**feature_config)
    cpu, start = cpu_seconds(), time.perf_counter()
    audio_s, frames = 0.0, 0
    for path in paths:
        signal, rate = librosa.load(path, sr=cfg.sample_rate)
        mel = librosa.feature.melspectrogram(y=signal, sr=rate, n_fft=cfg.win_length, hop_length=cfg.hop_length,
                                             n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
        frames += np.log(np.maximum(mel, cfg.log_floor)).shape[1]
        audio_s += len(signal) / rate
    return {"seconds": time.perf_counter() - start, "cpu_s": cpu_seconds() - cpu, "audio_s": audio_s, "frames": frames}


def build_child(audio_dir: str, rttm_dir: str | None, store: str, jobs: int) -> dict[str, Any]:
    """``build_features`` as ``agencerdas features`` runs it; the summary plus its wall seconds."""
    from agencerdas.pipeline import FeaturesRequest, build_features

    cpu, start = cpu_seconds(), time.perf_counter()
    summary = build_features(FeaturesRequest(audio_dir=Path(audio_dir), rttm_dir=Path(rttm_dir) if rttm_dir else None,
                                             store=store, jobs=jobs, progress=False))
    seconds = time.perf_counter() - start
    return {**dataclasses.asdict(summary), "seconds": seconds, "cpu_s": cpu_seconds() - cpu, "ok": summary.ok}


def lhotse_child(audio_dir: str, out_dir: str, jobs: int, sample_rate: int, n_mels: int) -> dict[str, Any]:
    """Lhotse's recipe: scan recordings, resample cuts, ``compute_and_store_features`` with an 80-bin Fbank.

    One torch thread per process with several jobs, as Lhotse itself advises.
    """
    import torch
    from lhotse import CutSet, Fbank, FbankConfig, LilcomChunkyWriter, RecordingSet

    if jobs > 1:
        torch.set_num_threads(1)
    cpu, start = cpu_seconds(), time.perf_counter()
    recordings = RecordingSet.from_dir(audio_dir, pattern="*.*", num_jobs=jobs)
    cuts = CutSet.from_manifests(recordings=recordings).resample(sample_rate)
    cuts = cuts.compute_and_store_features(extractor=Fbank(FbankConfig(num_mel_bins=n_mels)), storage_path=out_dir,
                                           num_jobs=jobs, storage_type=LilcomChunkyWriter)
    return {"seconds": time.perf_counter() - start, "cpu_s": cpu_seconds() - cpu,
            "audio_s": float(sum(c.duration for c in cuts)), "cuts": len(cuts)}


def feature_stage_child(path: str, store: str) -> dict[str, Any]:
    """Features of one recording through the worker's own task; RSS before and at the peak (MiB)."""
    from agencerdas.pipeline.tasks import Task, run_task
    from agencerdas.stores import Store, feature_key, hash_file

    from .measure import peak_rss_mb, rss_mb

    config = FeatureConfig().to_dict()
    before = rss_mb()
    Store(store, create=True)
    task = Task(Path(path).stem, path, store, {}, config, {}, feature_key(hash_file(Path(path)), config), None, True, False)
    start = time.perf_counter()
    result = run_task(task)
    return {"status": result.status, "reason": result.reason, "duration_s": result.duration_s,
            "seconds": time.perf_counter() - start, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb()}


def _isolated(step: str, cache_dir: Path | None = None, **kwargs: Any) -> dict[str, Any]:
    env = {"AGENCERDAS_CACHE_DIR": str(cache_dir)} if cache_dir else None
    return run_isolated(f"{__name__}:{step}", env=env, **kwargs)


# ----------------------------------------------------------------- sections


def _speed(run: dict[str, Any], audio_s: float, baseline: dict[str, Any]) -> dict[str, Any]:
    """Add x real time, CPU seconds per audio hour, the speed-up over the baseline run (its seconds /
    these) and the CPU cost relative to it (these CPU seconds / its)."""
    return {**run, "x_real_time": audio_s / run["seconds"] if run["seconds"] else None,
            "cpu_s_per_audio_h": run["cpu_s"] / (audio_s / 3600) if audio_s else None,
            "speedup_vs_naive": ratio(baseline["seconds"], run["seconds"]),
            "cpu_vs_naive": ratio(run["cpu_s"], baseline["cpu_s"])}


def _build(corpus: Corpus, work: Path, jobs: int) -> dict[str, Any]:
    """A first build into a fresh store with a fresh stat cache."""
    return _isolated("build_child", cache_dir=work / f"cache-{jobs}", audio_dir=str(corpus.audio_dir),
                     rttm_dir=str(corpus.rttm_dir) if corpus.rttm_dir else None, store=str(work / f"store-{jobs}"),
                     jobs=jobs)


def feature_section(corpus: Corpus, work: Path, jobs: int, progress: Progress) -> dict[str, Any]:
    """Naive baseline vs ``build_features`` with 1 and ``jobs`` jobs vs Lhotse at ``jobs``, in one run. Keys of
    the result: ``naive``, ``jobs_1``, ``jobs_n``, ``lhotse`` (runs with seconds, cpu_s, x_real_time,
    cpu_s_per_audio_h, speedup_vs_naive, cpu_vs_naive; or ``skipped`` with the reason), ``store``."""
    cfg = FeatureConfig()
    progress("naive notebook loop (librosa.load + melspectrogram, 1 process)")
    naive = _isolated("naive_child", paths=[str(p) for p in corpus.audio_files()], feature_config=cfg.to_dict())
    audio_s = naive["audio_s"]
    progress("build_features, jobs=1, fresh store")
    single = _speed(_build(corpus, work, 1), audio_s, naive)
    if jobs > 1:
        progress(f"build_features, jobs={jobs}, fresh store")
        parallel = _speed(_build(corpus, work, jobs), audio_s, naive)
    else:
        parallel = {**single, "note": "jobs=1: the same run as jobs_1"}
    result = {"audio_s": audio_s, "jobs": jobs, "naive": _speed(naive, audio_s, naive),
              "jobs_1": single, "jobs_n": parallel, "store": str(work / f"store-{jobs}"),
              "cache_dir": str(work / f"cache-{jobs}")}
    missing = [name for name in LHOTSE_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        result["lhotse"] = {"skipped": f"not installed ({', '.join(missing)}): pip install -e '.[bench]' adds it"}
        return result
    progress(f"lhotse compute_and_store_features, Fbank 80, jobs={jobs}")
    try:
        lhotse_run = _isolated("lhotse_child", audio_dir=str(corpus.audio_dir), out_dir=str(work / "lhotse"),
                               jobs=jobs, sample_rate=cfg.sample_rate, n_mels=cfg.n_mels)
        result["lhotse"] = _speed(lhotse_run, audio_s, naive)
    except Exception as exc:  # an optional competitor failing must not lose the other results
        result["lhotse"] = {"skipped": f"lhotse failed: {str(exc).splitlines()[-1]}"}
    return result


def _rerun(corpus: Corpus, features: dict[str, Any], first_s: float) -> dict[str, Any]:
    run = _isolated("build_child", cache_dir=Path(features["cache_dir"]), audio_dir=str(corpus.audio_dir),
                    rttm_dir=str(corpus.rttm_dir) if corpus.rttm_dir else None, store=features["store"],
                    jobs=features["jobs"])
    keep = ("seconds", "found", "computed", "labels_only", "reused", "failures", "startup_s", "ok")
    return {**{k: run[k] for k in keep}, "percent_of_first": 100 * run["seconds"] / first_s}


def rerun_section(corpus: Corpus, features: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Reruns of the N-job build: unchanged, every file renamed, one RTTM edited.

    Percentages are of the first N-job build's seconds. ``rttm_edit.as_expected``
    says whether the summary counts show exactly one labels-only rebuild.
    """
    first_s = features["jobs_n"]["seconds"]
    progress("rerun, nothing changed")
    unchanged = _rerun(corpus, features, first_s)
    progress(f"rerun after renaming all {corpus.recordings} audio files")
    renamed = rename_all(corpus)
    after_rename = {**_rerun(corpus, features, first_s), "renamed_files": renamed}
    result = {"first_s": first_s, "unchanged": unchanged, "renamed": after_rename}
    if corpus.rttm_dir is None and not any(corpus.audio_dir.rglob("*.rttm")):
        result["rttm_edit"] = {"skipped": "the corpus has no RTTM files"}
        return result
    edited = edit_one_rttm(corpus)
    progress(f"rerun after editing the RTTM of {edited}")
    run = _rerun(corpus, features, first_s)
    found = run["found"]
    expected = run["labels_only"] == 1 and run["computed"] == 0 and run["reused"] == found - 1 and run["ok"]
    result["rttm_edit"] = {**run, "edited_recording": edited, "as_expected": expected,
                           "expected": f"labels_only=1 computed=0 reused={found - 1}"}
    return result


def memory_section(work: Path, corpora_dir: Path, minutes: tuple[float, float], progress: Progress) -> dict[str, Any]:
    """Peak RSS (MiB) of the feature stage for a short and a long synthetic recording, one process each.

    The two processes run side by side: each one's peak RSS is its own, and no timing is reported from them.
    """
    paths = {label: noise_and_tones(corpora_dir / "memory" / f"noise-tones-{length:g}min.wav", length)
             for label, length in zip(("short", "long"), minutes)}
    progress(f"feature-stage peak RSS, {minutes[0]:g}- and {minutes[1]:g}-minute recordings")
    with ThreadPoolExecutor(len(paths)) as pool:
        futures = {label: pool.submit(_isolated, "feature_stage_child", path=str(path),
                                      store=str(work / f"memory-store-{label}")) for label, path in paths.items()}
        runs = {label: {"minutes": length, **futures[label].result()} for label, length in zip(paths, minutes)}
    short, long = runs["short"]["peak_rss_mb"], runs["long"]["peak_rss_mb"]
    return {**runs, "limit_mb": 1.2 * short + 100, "long_over_short": ratio(long, short)}
