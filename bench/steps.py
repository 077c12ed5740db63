"""Training steps (sections 4 and 5, and the GPU section): loader stall, memory, precision.

A step is the trainer's own (``Trainer._train_step``: autocast, loss, backward,
clipping, optimizer and scheduler step) on the trainer's own model and optimizer.
Fed by the real DataLoader over the store, its time includes any wait for data;
fed by synthetic in-memory batches of the same shape it does not, so
``stall = real / synthetic`` step time (1.0 = the loader never holds training up).
Each device sync happens per step, so step times are complete on CUDA too.

All presets run in one fresh process (started by :func:`loader_section`; in the
bench's own at size tiny), smallest model first so memory kept by an earlier
preset never inflates a later one's peak.
"""

from __future__ import annotations

import gc
import itertools
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from agencerdas.training.config import TrainConfig, resolve
from agencerdas.training.inputs import load_data
from agencerdas.training.loop import Trainer
from agencerdas.training.resident import ResidentLoader
from agencerdas.training.runtime import Runtime, native_bf16, setup

from .isolated import run_isolated
from .measure import RssSampler, epochs, iterate_for, ratio
from .roundtrips import RoundTrips

PRESETS = ("original", "optimized", "ultra-fast")
#: Untimed steps before timing starts (worker start, allocator and kernel warm-up).
WARMUP_STEPS = 2
#: Synthetic batch sizes of the GPU section besides each preset's own.
GPU_BATCHES = (32, 64)
Batch = dict[str, torch.Tensor]


def synthetic_batches(cfg: TrainConfig, n_mels: int, batch: int, device: torch.device, count: int = 4,
                      identities: int = 1) -> list[Batch]:
    """``count`` random batches shaped like the loader's: feats (B, window, D), labels (B, window, S), mask and
    valid (B, window), weight (B,), speakers (B, S) (of ``identities``), nothing padded."""
    width = n_mels * cfg.downsample if cfg.pooling == "stack" else n_mels
    generator = torch.Generator().manual_seed(cfg.seed)
    every = torch.ones(batch, cfg.window, dtype=torch.bool, device=device)
    return [{
        "feats": torch.randn(batch, cfg.window, width, generator=generator).to(device),
        "labels": (torch.rand(batch, cfg.window, cfg.max_speakers, generator=generator) < 0.3).float().to(device),
        "mask": every, "valid": every, "weight": torch.ones(batch, device=device), "padded": False,
        "speakers": torch.randint(0, identities, (batch, cfg.max_speakers), generator=generator).to(device),
    } for _ in range(count)]


def trainer_batches(trainer: Trainer, count: int = 4) -> list[Batch]:
    """:func:`synthetic_batches` for ``trainer``'s model, data and device, at its own batch size."""
    table = trainer.model.speaker_table
    return synthetic_batches(trainer.cfg, trainer.data.feature_config["n_mels"], trainer.cfg.batch, trainer.rt.device,
                             count, 1 if table is None else len(table))


def real_batches(trainer: Trainer) -> Iterator[Batch]:
    """The trainer's loader, epoch after epoch, as ``Trainer.fit`` would feed it."""
    return epochs(trainer.plan, trainer.loader)


def time_steps(trainer: Trainer, batches: Iterator[Batch], seconds: float, min_steps: int = 3,
               max_steps: int | None = None) -> dict[str, float]:
    """Training steps over ``batches`` after :data:`WARMUP_STEPS` untimed ones.

    Returns ``steps``, ``seconds``, ``steps_per_s``, ``mean_step_s`` (wall time per
    step, waiting for data included), ``median_compute_s`` (the step itself, robust
    to load spikes) and ``wait_s`` (mean wall time per step outside the step: the
    loader's stall).
    """
    device = trainer.rt.device
    compute: list[float] = []

    def steps() -> Iterator[int]:
        for micro, batch in enumerate(batches):
            start = time.perf_counter()
            trainer._train_step(batch, micro, 1 << 30)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            compute.append(time.perf_counter() - start)
            yield 1

    run = iterate_for(steps(), int, seconds, min_steps, max_steps, skip=WARMUP_STEPS)
    timed = compute[WARMUP_STEPS : WARMUP_STEPS + run.items]
    mean = run.seconds / max(run.items, 1)
    return {"steps": run.items, "seconds": run.seconds, "steps_per_s": run.per_s, "mean_step_s": mean,
            "median_compute_s": statistics.median(timed) if timed else 0.0,
            "wait_s": max(0.0, mean - sum(timed) / max(len(timed), 1))}


def round_trips(trainer: Trainer, batches: Iterator[Batch], steps: int = 5) -> dict[str, Any]:
    """Host round trips and device copies per training step, batch building included, counted by
    :class:`~bench.roundtrips.RoundTrips` over ``steps`` steps after a first one (which also builds the
    loss's cached constant tables)."""
    batches = iter(batches)
    trainer._train_step(next(batches), 0, 1 << 30)
    with RoundTrips() as trips:
        for micro in range(1, steps + 1):
            trainer._train_step(next(batches), micro, 1 << 30)
    return {"per_step": trips.total / steps, "copies_per_step": trips.transfers / steps, "calls": dict(trips.calls)}


def _trainer(preset: str, overrides: list[str], store_url: str, view: str, out_dir: str, rt: Runtime) -> Trainer:
    cfg = resolve(preset, overrides)
    return Trainer(cfg, load_data(cfg, store_url, view, {}), Path(out_dir) / preset, rt, resume=False, progress=False)


#: The optimized step's variants whose cost :func:`loss_cost` compares: the default (PIT with the embedding
#: head), powerset, and PIT without the head.
LOSS_VARIANTS = {"pit": ["LOSS=pit"], "powerset": ["LOSS=powerset"], "pit_plain": ["LOSS=pit", "EMBED_LOSS_WEIGHT=0"]}


def loss_cost(store_url: str, view: str, overrides: list[str], budget_s: float, out_dir: str,
              rt: Runtime) -> dict[str, Any]:
    """The optimized step (synthetic batches, median compute time) of each of :data:`LOSS_VARIANTS`,
    alternating twice so load on the machine hits all alike: powerset against PIT, and the embedding head
    against none."""
    trainers = {name: _trainer("optimized", [*overrides, *delta], store_url, view, f"{out_dir}/{name}", rt)
                for name, delta in LOSS_VARIANTS.items()}
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(2):
        for name, trainer in trainers.items():
            fake = trainer_batches(trainer)
            times[name].append(time_steps(trainer, itertools.cycle(fake), budget_s / 3)["median_compute_s"])
    step = {name: statistics.median(values) for name, values in times.items()}
    return {"pit_step_s": step["pit"], "powerset_step_s": step["powerset"], "plain_step_s": step["pit_plain"],
            "powerset_vs_pit": ratio(step["powerset"], step["pit"]), "embedding_vs_plain": ratio(step["pit"], step["pit_plain"])}


def stall_child(store_url: str, view: str, overrides: list[str], budget_s: float, out_dir: str) -> dict[str, Any]:
    """Per preset: step time with the real loader vs synthetic batches, with and without the preset's
    simulated conversations, and peak memory (MiB)."""
    rt = setup("auto", "auto")
    results = {"device": str(rt.device), "precision": rt.precision, "torch_threads": torch.get_num_threads()}
    # Sampled every 0.25 s, not the default 20 ms: each sample scans /proc for the children, and at 20 ms
    # the steps of a 2-core machine ran 3-7x slower than in training (that thread preempting torch's).
    with RssSampler(interval_s=0.25) as sampler:
        for preset in reversed(PRESETS):
            trainer = _trainer(preset, overrides, store_url, view, out_dir, rt)
            cfg = trainer.cfg
            sampler.reset()
            if rt.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(rt.device)
            # Synthetic first: once started, loader workers would compete with it for the CPU.
            fake = trainer_batches(trainer)
            synthetic = time_steps(trainer, itertools.cycle(fake), budget_s)
            real = time_steps(trainer, real_batches(trainer), budget_s)
            # Counted on the device-resident path, where the batch is built in this process; a streaming
            # loader builds it in worker processes, out of the counter's sight.
            trips = round_trips(trainer, real_batches(trainer)) if isinstance(trainer.loader, ResidentLoader) else None
            simulation = {}
            if cfg.sim_prob:  # the same trainer with its plan's simulated share off: what simulation costs a step
                trainer.plan.simulate = 0.0
                without = time_steps(trainer, real_batches(trainer), budget_s)
                trainer.plan.simulate = cfg.sim_prob
                simulation = {"sim_prob": cfg.sim_prob, "real_without_simulation": without,
                              "simulation_cost": ratio(real["mean_step_s"], without["mean_step_s"])}
            results[preset] = {
                "batch": cfg.batch, "window": cfg.window, "downsample": cfg.downsample, "dim": cfg.dim,
                "blocks": cfg.blocks, "num_workers": cfg.num_workers, "real": real, "synthetic": synthetic,
                "real_step_s": real["mean_step_s"], "synthetic_step_s": synthetic["mean_step_s"],
                "stall": ratio(real["mean_step_s"], synthetic["mean_step_s"]), "peak_rss_mb": sampler.peak_self_mb,
                "data_path": trainer.data_path, "round_trips": trips,
                "workers_peak_rss_mb": sampler.peak_children_mb,
                "cuda_peak_mb": torch.cuda.max_memory_allocated(rt.device) / 2**20 if rt.device.type == "cuda" else None,
                **simulation,
            }
            del trainer, fake
            gc.collect()  # ends this preset's loader workers before the next preset is timed
    results["loss_cost"] = loss_cost(store_url, view, overrides, budget_s, out_dir, rt)
    return results


def _gpu_run(trainer: Trainer, batches: Iterator[Batch], steps: int, windows: int) -> dict[str, Any]:
    device = trainer.rt.device
    torch.cuda.reset_peak_memory_stats(device)
    try:
        run = time_steps(trainer, batches, 0.0, steps, steps)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {"error": "CUDA out of memory"}
    return {**run, "windows_per_s": run["steps_per_s"] * windows, "peak_mb": torch.cuda.max_memory_allocated(device) / 2**20}


def gpu_child(store_url: str, view: str, overrides: list[str], steps: int, out_dir: str) -> dict[str, Any]:
    """Per preset and precision: steps/s and peak CUDA memory with synthetic batches, and with the real loader."""
    device = torch.device("cuda")
    precisions = ["fp32", "bf16", "fp16"] if native_bf16(device) else ["fp32", "fp16"]
    results: dict[str, Any] = {"device": torch.cuda.get_device_name(device), "precisions": precisions}
    for preset in PRESETS:
        entry: dict[str, Any] = {}
        for precision in precisions:
            trainer = _trainer(preset, overrides, store_url, view, out_dir, setup("cuda", precision))
            n_mels = trainer.data.feature_config["n_mels"]
            for batch in (trainer.cfg.batch, *GPU_BATCHES):
                fake = synthetic_batches(trainer.cfg, n_mels, batch, device)
                entry[f"{precision}/batch{batch}"] = _gpu_run(trainer, itertools.cycle(fake), steps, batch)
            del trainer
        trainer = _trainer(preset, overrides, store_url, view, out_dir, setup("cuda", "auto"))
        entry["real_loader"] = {"precision": trainer.rt.precision, "batch": trainer.cfg.batch,
                                **_gpu_run(trainer, real_batches(trainer), steps, trainer.cfg.batch)}
        results[preset] = entry
        del trainer
    return results


def loader_section(store_url: str, view: str, overrides: list[str], budget_s: float, work: Path,
                   progress: Callable[[str], None], isolate: bool = True) -> dict[str, Any]:
    """Loader stall and training memory per preset on the current device, in one fresh process
    (``isolate``) or in this one (faster to start; its RSS then includes this process's)."""
    progress(f"training steps, real loader vs synthetic batches: {', '.join(PRESETS)}")
    kwargs = {"store_url": store_url, "view": view, "overrides": overrides, "budget_s": budget_s,
              "out_dir": str(work / "runs")}
    if not isolate:
        return {**stall_child(**kwargs), "isolated": False}
    return {**run_isolated(f"{__name__}:stall_child", **kwargs), "isolated": True}


def gpu_section(store_url: str, view: str, overrides: list[str], steps: int, work: Path, wanted: bool,
                progress: Callable[[str], None]) -> dict[str, Any]:
    """The GPU matrix when asked for and CUDA is available; otherwise why it did not run."""
    if not torch.cuda.is_available():
        return {"gpu": "not available"}
    if not wanted:
        return {"gpu": "not requested (pass gpu=True / --gpu)"}
    progress("GPU: fp32 / bf16 / fp16 steps per second at the preset batch, 32 and 64")
    return run_isolated(f"{__name__}:gpu_child", store_url=store_url, view=view, overrides=overrides, steps=steps,
                        out_dir=str(work / "gpu-runs"))
