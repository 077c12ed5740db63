"""What a benchmark run reports: the machine, library versions, targets, the markdown table and the chart.

Every target compares a ratio measured in the same invocation (so a busy or slow
machine moves both sides); absolute numbers sit beside them for context.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from .steps import PRESETS as STEP_PRESETS

LIBRARIES = ("torch", "numpy", "librosa", "zarr", "numcodecs", "soundfile", "soxr", "joblib", "scipy", "lhotse")


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory, GPU (if any), OS and Python of this machine."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"host": platform.node(), "cpu": cpu, "logical_cores": os.cpu_count(),
            "physical_cores": psutil.cpu_count(logical=False), "usable_cores": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity") else os.cpu_count(), "memory_gb": psutil.virtual_memory().total / 2**30,
            "gpu": gpus or None, "os": platform.platform(), "python": platform.python_version(),
            "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def versions() -> dict[str, str | None]:
    """Installed versions of the libraries that shape the numbers (None: not installed)."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


@dataclass
class Target:
    """One goal: ``value`` against ``goal`` (``at_least`` or at most); ``passed`` None = not measurable."""

    name: str
    value: float | None
    goal: float
    at_least: bool
    unit: str = "x"
    note: str = ""

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.goal if self.at_least else self.value <= self.goal

    @property
    def margin(self) -> float | None:
        """How far past the goal, as a factor (>= 1 passes)."""
        if self.value is None or self.value <= 0:
            return None
        return self.value / self.goal if self.at_least else self.goal / self.value

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "margin": self.margin}


def targets(result: dict[str, Any]) -> list[Target]:
    """The issue's targets, evaluated on a run's raw numbers."""
    features, rerun, reads = result["features"], result["rerun"], result.get("reads", {})
    jobs = features["jobs"]
    found: list[Target] = [
        Target(f"feature build, {jobs} jobs, speed-up over naive", features["jobs_n"]["speedup_vs_naive"], 1.8, True),
        Target(f"feature build, {jobs} jobs, CPU seconds per audio hour vs naive", features["jobs_n"]["cpu_vs_naive"],
               0.55, False)]
    lhotse = features["lhotse"]
    found.append(Target(f"feature build, {jobs} jobs, speed-up over Lhotse", None if "skipped" in lhotse else
                        lhotse["seconds"] / features["jobs_n"]["seconds"], 1.0, True, note=lhotse.get("skipped", "")))
    found += [Target("unchanged rerun, % of first build", rerun["unchanged"]["percent_of_first"], 1.0, False, "%"),
              Target("rerun after renaming every file, % of first build", rerun["renamed"]["percent_of_first"], 5.0, False, "%")]
    edit = rerun["rttm_edit"]
    found.append(Target("RTTM edit rebuilds only that recording's labels", None if "skipped" in edit else
                        float(edit["as_expected"]), 1.0, True, "check", edit.get("skipped") or edit.get("expected", "")))
    for key, value in sorted(reads.get("ratios", {}).get("trainer_cold_vs_numpy", {}).items()):
        found.append(Target(f"trainer window reads (cold epoch), {key} proc, vs in-memory numpy", value, 0.5, True))
    for key, value in sorted(reads.get("ratios", {}).get("trainer_warm_vs_numpy", {}).items()):
        found.append(Target(f"trainer window reads (warm epochs), {key} proc, vs in-memory numpy", value, 0.5, True))
    for key, value in sorted(reads.get("ratios", {}).get("trainer_cold_vs_notebook", {}).items()):
        found.append(Target(f"trainer window reads (cold epoch), {key} proc, vs notebook per item", value, 100.0, True))
    for preset, run in result.get("loader", {}).items():
        if preset in STEP_PRESETS:
            found.append(Target(f"loader stall, {preset}: real / synthetic step time", run["stall"], 1.05, False))
            if run.get("round_trips") is not None:
                found.append(Target(f"host round trips per training step, {preset} (device-resident batches)",
                                    run["round_trips"]["per_step"], 0.0, False, "count"))
            if "simulation_cost" in run:
                found.append(Target(f"simulation, {preset}: step with / without {100 * run['sim_prob']:.0f}% simulated "
                                    "windows", run["simulation_cost"], 1.05, False))
    cost = result.get("loader", {}).get("loss_cost")
    if cost:
        found.append(Target("powerset step / PIT step (optimized, synthetic batches)", cost["powerset_vs_pit"], 1.05,
                            False))
        if "embedding_vs_plain" in cost:
            found.append(Target("step with the embedding head / without (optimized, PIT, synthetic batches)",
                                cost["embedding_vs_plain"], 1.10, False))
    memory = result.get("memory", {}).get("feature_stage")
    if memory:
        found.append(Target(f"feature-stage peak RSS, {memory['long']['minutes']:g}-min file (MB); limit 1.2 x "
                            f"{memory['short']['minutes']:g}-min + 100", memory["long"]["peak_rss_mb"],
                            memory["limit_mb"], False, "MB"))
    return found + _voice_targets(result.get("voices", {}))


#: The pretrained-voices section's pipelines (bench/voices.py), as the report names them.
_PIPELINES = {"head": "trained, head embeddings (baseline)", "ge2e": "trained, GE2E embeddings",
              "ge2e_vad": "trained, GE2E + Silero VAD", "pretrained": "no model: Silero VAD + GE2E windows"}


def _voice_targets(voices: dict[str, Any]) -> list[Target]:
    """Issue 31's: the pipelines with the pretrained encoder at >= 200x real time, memory flat in length."""
    if "speed" not in voices:
        return []
    runs = voices["speed"]["runs"]
    found = [Target("trained pipeline with GE2E embeddings + Silero VAD, x real time", runs["ge2e_vad"]["x_real_time"],
                    200.0, True),
             Target("no-model pipeline (Silero VAD, GE2E, clustering), x real time", runs["pretrained"]["x_real_time"],
                    200.0, True)]
    for name, runs in voices["memory"].items():
        if name != "minutes":
            found.append(Target(f"{_PIPELINES[name]}: peak anonymous RSS, {voices['memory']['minutes'][1]:g}-min / "
                                f"{voices['memory']['minutes'][0]:g}-min recording", runs["anon_long_over_short"],
                                1.10, False))
    return found


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(_f(cell) for cell in row) + " |" for row in rows] + [""]


def markdown(result: dict[str, Any], goals: list[Target]) -> str:
    """The human-readable report of a run (every figure is also in the JSON)."""
    m, c, feats, rerun = result["machine"], result["corpus"], result["features"], result["rerun"]
    gpu = ", ".join(m["gpu"]) if m["gpu"] else "no GPU"
    out = [f"# agencerdas bench — {result['size']}, {result['date']}, {m['host']}", "",
           f"Machine: {m['cpu']}, {m['usable_cores']} usable cores ({m['logical_cores']} logical), "
           f"{m['memory_gb']:.0f} GB RAM, {gpu}; Python {m['python']}, torch {result['versions']['torch']}; "
           f"load average {_f(m['load_average_1m'])} at start, {_f(m.get('load_average_1m_end'))} at end.",
           f"Corpus: {c['source']}: {c['recordings']} recordings, {c['audio_s'] / 60:.1f} min, formats {c['formats']}, "
           f"rates {c['rates_hz']}. Bench wall time {result['wall_s']:.0f} s.", "", "## Targets", ""]
    out += _table(["Target", "Measured", "Goal", "Result"], [
        [t.name, t.value, f"{'≥' if t.at_least else '≤'} {t.goal:g} {t.unit}",
         {True: "pass", False: "**miss**", None: f"n/a {t.note}".strip()}[t.passed]] for t in goals])
    out += ["## Feature build", ""]
    every = " (every core)" if feats["jobs"] >= m["usable_cores"] else ""
    runs = [("naive notebook (1 process)", feats["naive"]), ("build_features jobs=1", feats["jobs_1"])]
    runs += [(f"build_features jobs={feats['jobs']}{every}", feats["jobs_n"])] if feats["jobs"] > 1 else []
    runs += [] if "skipped" in feats["lhotse"] else [(f"lhotse Fbank 80 jobs={feats['jobs']}", feats["lhotse"])]
    out += _table(["Run", "Seconds", "x real time", "Speed-up vs naive", "CPU s", "CPU s per audio hour",
                   "CPU vs naive"],
                  [[name, r["seconds"], r["x_real_time"], r["speedup_vs_naive"], r["cpu_s"],
                    r["cpu_s_per_audio_h"], r["cpu_vs_naive"]] for name, r in runs])
    out += ["CPU seconds are those of the run's process and every worker it started, over the same span as the "
            "wall seconds; the notebook loop's BLAS and FFT threads count too.", ""]
    if "skipped" in feats["lhotse"]:
        out += [f"Lhotse: {feats['lhotse']['skipped']}.", ""]
    out += ["## Reruns", ""]
    out += _table(["Rerun", "Seconds", "% of first build", "computed", "labels-only", "reused"],
                  [[name, r["seconds"], r["percent_of_first"], r["computed"], r["labels_only"], r["reused"]]
                   for name, r in (("unchanged", rerun["unchanged"]), ("every file renamed", rerun["renamed"]),
                                   ("one RTTM edited", rerun["rttm_edit"])) if "seconds" in r])
    out += _reads(result.get("reads", {})) + _steps(result) + _store(result["store"])
    out += _durability(result["durability"]) + _voices(result.get("voices", {})) + _gpu(result["gpu"])
    return "\n".join(out)


def _reads(reads: dict[str, Any]) -> list[str]:
    if "skipped" in reads or not reads:
        return ["## Window reads", "", f"Skipped: {reads.get('skipped', 'not run')}.", ""]
    out = ["## Window reads", "", f"{reads['preset']} preset windows of {reads['window_base_frames']} base frames "
           f"(downsample {reads['downsample']}), batch {reads['batch']}, entry cache {reads['cache_mb']} MB per process.", ""]
    rows = []
    for name, label in (("trainer_cold", "trainer loader, cold epoch"), ("trainer_warm", "trainer loader, warm epochs"),
                        ("zarr", "cut_window from Zarr, one window at a time"),
                        ("numpy", "cut_window from in-memory numpy"),
                        ("notebook", "notebook: decode + log-mel per item")):
        rows.append([label] + [reads[name][k]["per_s"] for k in ("1", "2")])
    out += _table(["Reader", "windows/s, 1 process", "windows/s, 2 processes"], rows)
    out += ["", "Every reader but the notebook does the same work per window (normalise, the preset's "
            "augmentation, downsample, mask); only where the rows come from differs.", ""]
    if "resident" in reads:
        r = reads["resident"]["1"]
        out += [f"Device-resident batch builder (the train split packed in memory, batches by index arithmetic, "
                f"1 thread): {r['per_s']:.0f} windows/s, "
                f"{reads['ratios']['resident_vs_trainer_warm']['1']:.2f}x the warm trainer loader in 1 process; "
                f"{r['gb_per_s']:.2f} GB/s of memory traffic at {r['bytes_per_window'] / 2**20:.1f} MiB per window.", ""]
    if "simulation" in reads:
        sim = reads["simulation"]
        out += [f"Simulated conversations, 1 thread: the device-resident builder makes "
                f"{sim['resident_simulated']['per_s']:.0f} simulated windows/s ({sim['resident_real']['per_s']:.0f} "
                f"real ones; {reads['ratios']['resident_trainer_vs_real']['1']:.2f}x the real-only rate with the "
                f"trainer's {100 * sim['sim_prob']:.0f}% simulated), the streaming path renders "
                f"{sim['streamed_simulated']['per_s']:.0f}/s on the host.", ""]
    return out


def _steps(result: dict[str, Any]) -> list[str]:
    loader, memory = result.get("loader", {}), result.get("memory", {})
    out = ["## Training steps and memory", ""]
    if "skipped" in loader:
        out += [f"Skipped: {loader['skipped']}.", ""]
    else:
        out += [f"Device {loader['device']}, precision {loader['precision']}, {loader['torch_threads']} torch threads.", ""]
        out += ["Step times are wall ms per step (mean); *wait* is the part of a real-loader step spent waiting for "
                "data (and its % of the synthetic step), *compute* the median step itself, which other load on the "
                "machine and the loader's workers sharing the cores both move.", ""]
        out += _table(["Preset", "batch x window", "synthetic ms", "real-loader ms", "stall", "wait ms (%)", "compute ms "
                       "synthetic / real", "peak RSS MB", "workers RSS MB", "CUDA peak MB"],
                      [[p, f"{r['batch']} x {r['window']}", 1e3 * r["synthetic_step_s"], 1e3 * r["real_step_s"],
                        r["stall"], f"{1e3 * r['real']['wait_s']:.1f} ({100 * r['real']['wait_s'] / r['synthetic_step_s']:.1f} %)",
                        f"{1e3 * r['synthetic']['median_compute_s']:.1f} / {1e3 * r['real']['median_compute_s']:.1f}",
                        r["peak_rss_mb"], r["workers_peak_rss_mb"], r["cuda_peak_mb"]]
                       for p, r in loader.items() if p in STEP_PRESETS])
    stage = memory.get("feature_stage")
    if stage:
        out += _table(["Feature stage, one recording", "Minutes", "Seconds", "Peak RSS MB"],
                      [[label, stage[label]["minutes"], stage[label]["seconds"], stage[label]["peak_rss_mb"]]
                       for label in ("short", "long")])
    return out


def _store(store: dict[str, Any]) -> list[str]:
    out = ["## Store", ""]
    out += _table(["Setting in use", "entries", "MB on disk", "MB raw float32", "ratio"],
                  [[name, s["entries"], s["bytes"] / 2**20, s["raw_float32_bytes"] / 2**20, s["ratio"]]
                   for name, s in store["usage"]["settings"].items()])
    codecs = store["codecs"]
    err = codecs["float16_error"]
    out += [f"Matrix on {codecs['frames']:,} frames of float32 log-mel; windows of {codecs['window_base_frames']} "
            f"frames. float16 rounding error: max {err['max_abs']:.4f}, RMS {err['rms']:.5f} "
            f"(feature std {err['feature_std']:.2f}).", ""]
    out += _table(["dtype", "codec", "chunk", "ratio vs raw f32", "window reads/s", "whole entry MB/s", "write s"],
                  [[r["dtype"], r["codec"], r["chunk"], r["ratio"], r["window_reads_per_s"], r["whole_read_mb_per_s"],
                    r["write_s"]] for r in codecs["matrix"]])
    rec = codecs["recommendation"]
    best, now = rec["best"], rec["current"]
    verdict = (f"change to {best['dtype']} {best['codec']} chunk {best['chunk']}" if rec["change"]
               else "keep the current setting")
    out += [f"Fast enough: {rec['eligible']} of {len(codecs['matrix'])} settings.", ""]
    describe = lambda r: (f"{r['dtype']} {r['codec']} chunk {r['chunk']} (ratio {r['ratio']:.2f}, "  # noqa: E731
                          f"{r['window_reads_per_s']:.0f} windows/s, {r['whole_read_mb_per_s']:.0f} MB/s whole)")
    out += [f"Recommendation ({rec['rule']}): {describe(best)}; current {describe(now)}: **{verdict}**.", ""]
    return out


def _durability(run: dict[str, Any]) -> list[str]:
    out = ["## Durability", "",
           f"{run['entries']} features entries of {run['frames']:,} x 80 float16 ({run['entry_mb']:.2f} MB raw each), "
           f"written in one process into two local stores on {run['filesystem'] or 'an unknown filesystem'}, "
           "alternating entry by entry.", ""]
    out += _table(["Commit", "seconds", "ms per entry"],
                  [[label, run[name]["seconds"], run[name]["ms_per_entry"]]
                   for name, label in (("durable", "fsync files, directories, rename, parent (default)"),
                                       ("plain", "rename only (durable=False)"))])
    return out + [f"fsync costs {_f(run['ratio'])}x the write time without it "
                  f"({_f(run['extra_ms_per_entry'])} ms more per entry).", ""]


def _voices(voices: dict[str, Any]) -> list[str]:
    out = ["## Pretrained voices", ""]
    if "speed" not in voices:
        return out + [f"Skipped: {voices.get('skipped', 'not run')}.", ""]
    speed, memory = voices["speed"], voices["memory"]
    out += [f"{speed['files']} recordings, {speed['audio_s'] / 60:.1f} min, CPU, {speed['torch_threads']} torch "
            f"threads; the trained model had one epoch ({voices['training_s']:.0f} s). Seconds: fastest of "
            f"{len(next(iter(speed['runs'].values()))['rounds_s'])} passes.", ""]
    out += _table(["Pipeline", "Seconds", "x real time", "time / head's"],
                  [[_PIPELINES[n], r["seconds"], r["x_real_time"], speed["ratios"].get(f"{n}_vs_head", 1.0)]
                   for n, r in speed["runs"].items()])
    rows = [[_PIPELINES[n], f"{memory[n][label]['seconds']:.1f} s ({memory[n][label]['x_real_time']:.0f}x)",
             memory[n][label]["peak_anon_mb"], memory[n][label]["peak_rss_mb"]] for n in memory if n != "minutes"
            for label in ("short", "long")]
    for row, length in zip(rows, memory["minutes"] * (len(rows) // 2)):
        row.insert(1, length)
    out += _table(["Pipeline, one recording", "Minutes", "Seconds", "Peak anonymous RSS MB", "Peak RSS MB"], rows)
    return out + ["Peak RSS also counts the recording's memory-mapped samples (file pages); anonymous RSS is what "
                  "the process holds.", ""]


def _gpu(gpu: dict[str, Any]) -> list[str]:
    out = ["## GPU", ""]
    if "gpu" in gpu:
        return out + [f"GPU: {gpu['gpu']}.", ""]
    rows = []
    for preset, entry in gpu.items():
        if isinstance(entry, dict):
            for setting, run in entry.items():
                rows.append([preset, setting, run.get("steps_per_s"), run.get("windows_per_s"), run.get("peak_mb"),
                             run.get("error", "")])
    return out + [f"Device {gpu['device']}.", ""] + _table(
        ["Preset", "precision / batch", "steps/s", "windows/s", "peak CUDA MB", "error"], rows)


def chart(result: dict[str, Any], goals: list[Target], path: Path) -> Path:
    """A PNG of every target's margin (measured vs goal, >= 1 passes) on a log scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    rows = [t for t in goals if t.margin is not None and t.unit != "check"]
    figure = Figure(figsize=(10, 0.45 * len(rows) + 1.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    margins = [t.margin for t in rows]
    axes.barh(range(len(rows)), margins, color=["tab:green" if t.passed else "tab:red" for t in rows])
    axes.axvline(1.0, color="black", linewidth=1)
    axes.set_xscale("log")
    low, high = min(margins + [0.5]) / 1.5, max(margins + [2.0]) * 4  # room for the value labels
    axes.set_xlim(low, high)
    axes.xaxis.set_major_locator(FixedLocator([t for t in (0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100) if low <= t <= high]))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_yticks(range(len(rows)), [t.name for t in rows], fontsize=8)
    axes.invert_yaxis()
    for y, t in enumerate(rows):
        axes.annotate(f" {_f(t.value)} (goal {'≥' if t.at_least else '≤'} {t.goal:g})", (t.margin, y),
                      va="center", fontsize=7)
    axes.set_xlabel("measured / goal (≥ 1 passes; log scale)")
    axes.set_title(f"agencerdas bench {result['size']} — {result['date']} — {result['machine']['host']}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    return Path(path)


def file_stem(result: dict[str, Any]) -> str:
    """``<YYYY-MM-DD>-<host>-<size>``: one file set per machine, day and size."""
    host = re.sub(r"[^A-Za-z0-9._-]+", "_", result["machine"]["host"] or "host").strip("._") or "host"
    return f"{result['date']}-{host}-{result['size']}"
