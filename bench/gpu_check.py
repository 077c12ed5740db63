"""The GPU check: the trainer's GPU figures in one process, in minutes, on a store made on the spot.

``bench/gpu_check.sh run`` starts it on a machine with CUDA and no package registry
(``bench/gpu_check.sh prepare`` fetched, beforehand, the few wheels such a machine lacks).
Nothing is decoded: the synthetic store holds log-mel-like features (float16, 10 ms frames)
and turns for ``--recordings`` recordings of 60-240 s, the demo corpus's size by default,
so the figures are the trainer's alone. It prints, and writes as JSON:

* steps/s per preset and precision (fp32, bf16 where native, fp16) with synthetic batches
  and with the device-resident train split, the share of step time spent waiting for data,
  and peak device memory;
* the device-resident batch builder alone, in windows/s, at the preset batch and at 64;
* the wall time of ``train`` for ``optimized`` (15 epochs) and ``throughput``, validation
  (DER every epoch) included.

The features are random apart from a per-speaker spectral pattern where a speaker talks, so
the DERs printed say that training ran, not how good a model of real speech is.
``--tiny`` shrinks everything so the same code runs on a CPU in seconds (the test suite does).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from agencerdas.stores import ArraySpec, DatasetView, Segment, Store, ViewRecording, content_key, default_codec, save_view
from agencerdas.training.config import resolve
from agencerdas.training.inputs import load_data
from agencerdas.training.loop import Trainer, train
from agencerdas.training.runtime import native_bf16, setup

from .measure import epochs
from .steps import real_batches, round_trips, trainer_batches, time_steps

PRESETS = ("ultra-fast", "optimized", "original", "throughput")
N_MELS, SHIFT_S, CHUNK = 80, 0.01, 8000
#: Overrides of --tiny: models and windows small enough for a CPU test.
TINY = ["DIM=16", "BLOCKS=1", "HEADS=2", "WINDOW=40", "BATCH=4", "NUM_WORKERS=0"]


def _turns(rng: np.random.Generator, seconds: float) -> list[Segment]:
    """A conversation of 2-4 speakers: turns of ~3 s, pauses, and some overlap."""
    speakers = [f"s{i}" for i in range(int(rng.integers(2, 5)))]
    turns, t, last = [], float(rng.uniform(0.0, 1.0)), None
    while t < seconds - 0.5:
        speaker = str(rng.choice([s for s in speakers if s != last]))
        duration = min(float(rng.exponential(3.0)) + 0.3, seconds - t)
        turns.append(Segment(round(t, 3), round(duration, 3), speaker))
        last = speaker
        t += duration + (float(rng.uniform(-0.5, 0.0)) if rng.random() < 0.15 else float(rng.exponential(0.5)))
    return turns


def synthetic_store(root: Path, recordings: int, min_s: float, max_s: float, seed: int = 0) -> str:
    """A store at ``root`` with ``recordings`` entries and a view ``default`` (10% validation)."""
    store = Store(root)
    rng = np.random.default_rng(seed)
    feature_config = {"sample_rate": 16000, "n_mels": N_MELS, "win_length": 400, "hop_length": 160, "fmin": 20.0,
                      "fmax": 7600.0, "log_floor": 1e-10, "dtype": "float16", "synthetic": True}
    entries = {}
    for index in range(recordings):
        seconds = float(rng.uniform(min_s, max_s))
        frames = int(seconds / SHIFT_S)
        turns = _turns(rng, seconds)
        speakers = sorted({t.speaker for t in turns}, key=[t.speaker for t in turns].index)
        activity = np.zeros((frames, 4), dtype=np.uint8)
        for turn in turns:
            activity[int(turn.start / SHIFT_S) : int(turn.end / SHIFT_S), speakers.index(turn.speaker)] = 1
        patterns = rng.normal(0.0, 2.0, (4, N_MELS)).astype(np.float32)  # one "voice" per speaker
        feats = rng.normal(-8.0, 1.0, (frames, N_MELS)).astype(np.float32) + activity @ patterns
        rec_id = f"syn{index:04d}"
        fkey, lkey = content_key("synthetic-features", seed, rec_id), content_key("synthetic-labels", seed, rec_id)
        with store.write("features", fkey, {"frames": frames, "duration_s": frames * SHIFT_S}) as writer:
            writer.create("feats", ArraySpec(N_MELS, "float16", CHUNK, default_codec()))
            writer.append("feats", feats.astype(np.float16))
        attrs = {"speakers": speakers, "n_speakers": len(speakers), "frame_shift_s": SHIFT_S, "uem": None,
                 "turns": [[t.start, t.duration, t.speaker] for t in turns], "pseudo": False}
        with store.write("labels", lkey, attrs) as writer:
            writer.create("labels", ArraySpec(4, "uint8", CHUNK, default_codec()))
            writer.append("labels", activity)
        entries[rec_id] = ViewRecording(fkey, lkey, frames, frames * SHIFT_S, speakers, source=rec_id)
    save_view(store, DatasetView("default", entries, feature_config, {"max_speakers": 4}))
    return store.url


def _steps(preset: str, precision: str, url: str, out: Path, overrides: list[str], steps: int) -> dict[str, Any]:
    """Synthetic vs device-resident steps of one preset and precision, and peak device memory."""
    cfg = resolve(preset, [*overrides, "DATA_ON_DEVICE=true"])
    rt = setup(str(cfg.device), precision)
    trainer = Trainer(cfg, load_data(cfg, url, "default", {}), out / f"{preset}-{precision}", rt, resume=False,
                      progress=False)
    cuda = rt.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(rt.device)
    fake = trainer_batches(trainer)
    synthetic = time_steps(trainer, itertools.cycle(fake), 0.0, steps, steps)
    model_peak = torch.cuda.max_memory_allocated(rt.device) / 2**20 if cuda else None
    real = time_steps(trainer, real_batches(trainer), 0.0, steps, steps)
    return {
        "batch": cfg.batch, "synthetic_steps_per_s": synthetic["steps_per_s"], "resident_steps_per_s": real["steps_per_s"],
        "data_wait_share": max(0.0, 1.0 - real["steps_per_s"] / max(synthetic["steps_per_s"], 1e-9)),
        "peak_mb_model_only": model_peak,
        "peak_mb": torch.cuda.max_memory_allocated(rt.device) / 2**20 if cuda else None,
        "resident_split_mb": trainer.loader.windows.nbytes / 2**20,
    }


def _builder(url: str, out: Path, overrides: list[str], batches: int) -> dict[str, float]:
    """Windows/s of the resident batch builder alone (optimized windows, augmentation on)."""
    rates = {}
    for batch in (resolve("optimized", overrides).batch, 64):
        cfg = resolve("optimized", [*overrides, "DATA_ON_DEVICE=true", f"BATCH={batch}"])
        trainer = Trainer(cfg, load_data(cfg, url, "default", {}), out / "builder", setup(str(cfg.device), "fp32"),
                          resume=False, progress=False)
        windows = trainer.loader.windows
        planned = list(itertools.islice(epochs(trainer.plan), batches + 2))
        for b in planned[:2]:  # warm-up
            windows.batch(b)
        sync = torch.cuda.synchronize if windows.device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        for b in planned[2:]:
            windows.batch(b)
        sync()
        rates[f"batch{batch}"] = sum(len(b) for b in planned[2:]) / (time.perf_counter() - start)
    return rates


#: Dense peak FLOP/s by GPU name and precision (the vendor's figures), for context: what a step could reach.
PEAK_FLOPS = {"H200": {"fp32": 67e12, "tf32": 495e12, "bf16": 989e12, "fp16": 989e12},
              "H100": {"fp32": 67e12, "tf32": 495e12, "bf16": 989e12, "fp16": 989e12}}


def _variants(url: str, out: Path, overrides: list[str], steps: int, tiny: bool) -> dict[str, Any]:
    """The optimized preset beside its resident step: with torch.compile, with the streaming loader (pinned
    memory, loader workers), its host round trips per step (counted on any device; on CUDA also by
    ``torch.cuda.set_sync_debug_mode``), and its FLOPs per step against the card's peak."""
    rows: dict[str, Any] = {}
    variants = [("streaming", ["DATA_ON_DEVICE=false"])] + ([] if tiny else [("compile", ["COMPILE=true"])])
    for name, extra in variants:  # --tiny leaves compile to the test suite's smoke test (seconds of inductor)
        cfg = resolve("optimized", [*overrides, "DATA_ON_DEVICE=true", *extra])
        rt = setup(str(cfg.device), "auto")
        trainer = Trainer(cfg, load_data(cfg, url, "default", {}), out / f"variant-{name}", rt, resume=False,
                          progress=False)
        run = time_steps(trainer, real_batches(trainer), 0.0, steps, steps)
        rows[name] = {"steps_per_s": run["steps_per_s"], "wait_share": run["wait_s"] / max(run["mean_step_s"], 1e-9),
                      "data_path": trainer.data_path, "precision": rt.precision}
    cfg = resolve("optimized", [*overrides, "DATA_ON_DEVICE=true"])
    rt = setup(str(cfg.device), "auto")
    trainer = Trainer(cfg, load_data(cfg, url, "default", {}), out / "variant-counts", rt, resume=False, progress=False)
    rows["round_trips"] = round_trips(trainer, real_batches(trainer))
    if rt.device.type == "cuda":
        rows["cuda_syncs_per_step"] = _cuda_syncs(trainer, real_batches(trainer), 5)
    batch = next(iter(real_batches(trainer)))
    with FlopCounterMode(display=False) as flops:
        trainer._train_step(batch, 0, 1 << 30)
    run = time_steps(trainer, real_batches(trainer), 0.0, steps, steps)
    achieved = flops.get_total_flops() * run["steps_per_s"]
    name = torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda" else "cpu"
    peak = next((p for gpu, p in PEAK_FLOPS.items() if gpu in name), {})
    precision = "tf32" if rt.precision.startswith("fp32") and rt.device.type == "cuda" else rt.precision
    rows["flops"] = {"per_step": flops.get_total_flops(), "steps_per_s": run["steps_per_s"], "achieved": achieved,
                     "precision": precision, "peak": peak.get(precision),
                     "share_of_peak": achieved / peak[precision] if precision in peak else None}
    return rows


def _cuda_syncs(trainer: Trainer, batches, steps: int) -> float:
    """Synchronizing CUDA calls per training step, as ``torch.cuda.set_sync_debug_mode("warn")`` names them."""
    batches = iter(batches)
    trainer._train_step(next(batches), 0, 1 << 30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for micro in range(1, steps + 1):
                trainer._train_step(next(batches), micro, 1 << 30)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught) / steps


def _train_wall(preset: str, epochs: int, url: str, out: Path, overrides: list[str]) -> dict[str, Any]:
    cfg = resolve(preset, [*overrides, f"EPOCHS={epochs}"])
    start = time.perf_counter()
    history = train(cfg, url, "default", out / f"train-{preset}", progress=False)
    return {"epochs": epochs, "wall_s": time.perf_counter() - start, "steps": history[-1]["step"],
            "validation_s": sum(r.get("val_seconds", 0.0) for r in history),
            "val_der": history[-1].get("val_der"), "precision": history[-1]["precision"],
            "data_path": history[-1]["data_path"]}


def run_check(work: Path, recordings: int, steps: int, tiny: bool) -> dict[str, Any]:
    """Every figure of the check; ``tiny``: a CPU-sized corpus, models and schedule."""
    overrides = [*TINY, "DEVICE=cpu"] if tiny else []
    device = torch.device("cpu") if tiny else torch.device("cuda")
    started = time.perf_counter()
    url = synthetic_store(work / "store", recordings, 20.0 if tiny else 60.0, 30.0 if tiny else 240.0)
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                              "torch": torch.__version__, "recordings": recordings,
                              "store_s": time.perf_counter() - started}
    precisions = ["fp32"] if tiny else ["fp32", *(["bf16"] if native_bf16(device) else []), "fp16"]
    result["steps"] = {f"{p}/{x}": _steps(p, x, url, work / "runs", overrides, steps)
                       for p in PRESETS for x in precisions}
    result["builder_windows_per_s"] = _builder(url, work / "runs", overrides, steps)
    result["variants"] = _variants(url, work / "runs", overrides, steps, tiny)
    result["train"] = {p: _train_wall(p, 1 if tiny else 15, url, work / "runs", overrides)
                       for p in ("optimized", "throughput")}
    result["total_s"] = time.perf_counter() - started
    return result


def table(result: dict[str, Any]) -> str:
    """The check as a few screen lines."""
    lines = [f"GPU check on {result['device']} (torch {result['torch']}), {result['recordings']} synthetic recordings "
             f"(store made in {result['store_s']:.0f} s)",
             f"{'preset/precision':<22}{'batch':>6}{'synthetic st/s':>16}{'resident st/s':>15}{'data wait':>11}"
             f"{'peak MB':>9}{'model-only MB':>15}"]
    for name, r in result["steps"].items():
        peak = f"{r['peak_mb']:.0f}" if r["peak_mb"] is not None else "-"
        model = f"{r['peak_mb_model_only']:.0f}" if r["peak_mb_model_only"] is not None else "-"
        lines.append(f"{name:<22}{r['batch']:>6}{r['synthetic_steps_per_s']:>16.1f}{r['resident_steps_per_s']:>15.1f}"
                     f"{100 * r['data_wait_share']:>10.1f}%{peak:>9}{model:>15}")
    rates = ", ".join(f"{k}: {v:,.0f} windows/s" for k, v in result["builder_windows_per_s"].items())
    lines.append(f"resident batch builder alone (optimized windows, augmented): {rates}")
    v = result["variants"]
    for name in ("streaming", "compile"):
        if name in v:
            lines.append(f"optimized, {name}: {v[name]['steps_per_s']:.1f} steps/s ({v[name]['precision']}; data wait "
                         f"{100 * v[name]['wait_share']:.1f}% of a step; {v[name]['data_path']})")
    syncs = f"; CUDA sync debug mode: {v['cuda_syncs_per_step']:.1f} per step" if "cuda_syncs_per_step" in v else ""
    lines.append(f"host round trips per resident step: {v['round_trips']['per_step']:.1f} "
                 f"({v['round_trips']['calls'] or 'none'}){syncs}")
    f = v["flops"]
    share = f", {100 * f['share_of_peak']:.1f}% of the card's {f['precision']} peak" if f["share_of_peak"] else ""
    lines.append(f"optimized step: {f['per_step'] / 1e9:.2f} GFLOP, {f['achieved'] / 1e12:.2f} TFLOP/s achieved{share}")
    for preset, r in result["train"].items():
        der = f"{100 * r['val_der']:.1f}%" if r["val_der"] is not None else "-"
        lines.append(f"train {preset}: {r['epochs']} epochs, {r['steps']} steps in {r['wall_s']:.1f} s wall "
                     f"(validation {r['validation_s']:.1f} s; {r['precision']}; data {r['data_path']}; "
                     f"synthetic-data val DER {der})")
    lines.append(f"total {result['total_s']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agencerdas.bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/agencerdas-gpu-check", help="scratch directory (store, runs)")
    parser.add_argument("--out", help="also write the result as JSON here")
    parser.add_argument("--recordings", type=int, default=135)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per preset and precision")
    parser.add_argument("--tiny", action="store_true", help="CPU-sized: a few seconds, for tests")
    args = parser.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        print("agencerdas.bench.gpu_check: no CUDA device here; use --tiny to run the check's code on the CPU", file=sys.stderr)
        return 2
    result = run_check(Path(args.work), args.recordings, args.steps, args.tiny)
    print(table(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
