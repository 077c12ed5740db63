"""Pretrained voices (section 8): what the pretrained speaker encoder and VAD cost a diarization pipeline.

Speed: the bench corpus through four pipelines, in one fresh process on the CPU (in the bench's own at size
tiny): the trained model with its own embedding head (the baseline), with GE2E slot embeddings, with GE2E and
Silero VAD, and the pipeline with no trained model (Silero VAD -> 1.5-s windows -> GE2E -> clustering). The
model is trained here for one epoch of the optimized preset on the bench's store: its weights move how much
speech the slots hold and so the encoder's work, not the cost per second of speech. Each pipeline runs once
untimed (loading, allocator warm-up), then every recording ``ROUNDS`` times, rounds alternating between the
pipelines so that other load on the machine hits them alike; the fastest round counts.

Memory: peak memory of a short and a long recording (10 and 120 minutes at sizes small and full) through the
encoder + VAD paths, one fresh process per recording and pipeline, one after another: the no-model pipeline
and the trained model with GE2E and Silero VAD. The recordings loop the corpus's own audio (speech for the
generated corpora), so the encoder has speech to embed. Peak RSS (``VmHWM``) counts the pages of the
recording's memory-mapped samples (file pages the kernel may drop); peak anonymous RSS (sampled every 0.1 s)
is the memory the process itself holds, and the target is set on it.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import soundfile as sf

from agencerdas.pipeline.audio import probe, stream_mono

from .isolated import run_isolated
from .measure import RssSampler, peak_rss_mb, ratio

Progress = Callable[[str], None]

#: Trained pipelines timed, by name: the options of ``load_model`` (via ``Diarizer.from_checkpoint``).
TRAINED = {"head": {}, "ge2e": {"embeddings": "ge2e"}, "ge2e_vad": {"embeddings": "ge2e", "vad": "silero"}}
#: The pipeline with no trained model, timed beside them.
PRETRAINED = "pretrained"
#: Timed passes over the corpus per pipeline; the fastest counts.
ROUNDS = 2
RATE = 16000


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` field in MiB (0 where the file or field is missing: not Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return 0.0


class AnonSampler(RssSampler):
    """:class:`~bench.measure.RssSampler` that also keeps the peak anonymous RSS (``RssAnon``) of this process."""

    peak_anon_mb = 0.0

    def _sample(self) -> None:
        super()._sample()
        self.peak_anon_mb = max(self.peak_anon_mb, _status_mb("RssAnon"))


def _pipelines(checkpoint: str | None, names: list[str]) -> dict[str, Any]:
    """The named pipelines, loaded on the CPU (imported here: the bench's parser never loads torch)."""
    from agencerdas.inference.api import Diarizer
    from agencerdas.inference.pretrained import PretrainedDiarizer

    return {name: PretrainedDiarizer.load("cpu") if name == PRETRAINED else
            Diarizer.from_checkpoint(checkpoint, "cpu", **TRAINED[name]) for name in names}


def speed_child(checkpoint: str, files: list[str]) -> dict[str, Any]:
    """Seconds per pass over ``files`` of each of :data:`TRAINED` and :data:`PRETRAINED` (see the module doc)."""
    import torch

    from agencerdas.scoring.cluster import SpeakerCountWarning

    warnings.simplefilter("ignore", SpeakerCountWarning)  # a one-epoch model miscounts; its count is not measured
    pipelines = _pipelines(checkpoint, [*TRAINED, PRETRAINED])
    audio_s = sum(probe(Path(f)).duration_s for f in files)
    rounds: dict[str, list[float]] = {name: [] for name in pipelines}
    speech_s = {}
    for name, diarize in pipelines.items():
        speech_s[name] = float(diarize(files[0]).get_timeline().support().duration())
    for _ in range(ROUNDS):
        for name, diarize in pipelines.items():
            start = time.perf_counter()
            for path in files:
                diarize(path)
            rounds[name].append(time.perf_counter() - start)
    runs = {name: {"seconds": min(times), "rounds_s": times, "x_real_time": audio_s / min(times),
                   "first_file_speech_s": speech_s[name]} for name, times in rounds.items()}
    head = runs["head"]["seconds"]
    return {"audio_s": audio_s, "files": len(files), "torch_threads": torch.get_num_threads(), "runs": runs,
            "ratios": {f"{name}_vs_head": ratio(runs[name]["seconds"], head) for name in runs if name != "head"}}


def memory_child(path: str, pipeline: str, checkpoint: str | None) -> dict[str, Any]:
    """Diarize one recording with one pipeline; seconds and peak memory (MiB)."""
    from agencerdas.scoring.cluster import SpeakerCountWarning

    warnings.simplefilter("ignore", SpeakerCountWarning)
    diarize = _pipelines(checkpoint, [pipeline])[pipeline]
    duration_s = probe(Path(path)).duration_s
    with AnonSampler(interval_s=0.1) as sampler:
        loaded_mb = sampler.peak_self_mb
        start = time.perf_counter()
        annotation = diarize(path)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "x_real_time": duration_s / seconds, "loaded_rss_mb": loaded_mb,
            "peak_rss_mb": peak_rss_mb(), "peak_anon_mb": sampler.peak_anon_mb, "speakers": len(annotation.labels()),
            "speech_s": float(annotation.get_timeline().support().duration())}


def looped_speech(files: list[Path], path: Path, minutes: float, block_s: float = 60.0) -> Path:
    """A mono 16-bit 16 kHz WAV of ``minutes``: ``files`` decoded one after another, over and over, written
    block by block (never held whole)."""
    frames = int(round(minutes * 60 * RATE))
    path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(str(path), "w", RATE, 1, subtype="PCM_16", format="WAV") as sink:
        written = 0
        while written < frames:
            for source in files:
                for block in stream_mono(source, RATE, block_s):
                    block = np.clip(block[: frames - written], -1.0, 1.0)
                    sink.write(block)
                    written += len(block)
                    if written >= frames:
                        return path
    return path


def train_child(store_url: str, view: str, overrides: list[str], out_dir: str) -> dict[str, Any]:
    """One epoch of the optimized preset: a checkpoint the trained pipelines can load."""
    from agencerdas.training.config import resolve
    from agencerdas.training.loop import train

    start = time.perf_counter()
    train(resolve("optimized", [*overrides, "epochs=1", "der_every=0"]), store_url, view, Path(out_dir), progress=False)
    return {"checkpoint": str(Path(out_dir) / "last.pt"), "seconds": time.perf_counter() - start}


def voices_section(store_url: str, view: str, overrides: list[str], files: list[Path], work: Path,
                   minutes: tuple[float, float], isolate: bool, progress: Progress) -> dict[str, Any]:
    """Speed ratios of the pipelines with pretrained components, and their memory on a short and a long
    recording (see the module doc)."""
    progress("one epoch of the optimized preset, for a checkpoint")
    trained = run_isolated(f"{__name__}:train_child", store_url=store_url, view=view, overrides=overrides,
                           out_dir=str(work / "voices-run"))
    checkpoint = trained["checkpoint"]
    progress(f"{len(files)} recordings through {', '.join([*TRAINED, PRETRAINED])}, fastest of {ROUNDS} rounds")
    kwargs = {"checkpoint": checkpoint, "files": [str(f) for f in files]}
    speed = run_isolated(f"{__name__}:speed_child", **kwargs) if isolate else speed_child(**kwargs)
    memory: dict[str, Any] = {"minutes": list(minutes)}
    for label, length in zip(("short", "long"), minutes):
        path = looped_speech(files, work / "voices-memory" / f"{label}.wav", length)
        for pipeline in (PRETRAINED, "ge2e_vad"):
            progress(f"peak memory, {length:g}-minute recording, {pipeline} pipeline")
            memory.setdefault(pipeline, {})[label] = run_isolated(f"{__name__}:memory_child", path=str(path),
                                                                  pipeline=pipeline, checkpoint=checkpoint)
        path.unlink()
    for pipeline in (PRETRAINED, "ge2e_vad"):
        runs = memory[pipeline]
        runs["anon_long_over_short"] = ratio(runs["long"]["peak_anon_mb"], runs["short"]["peak_anon_mb"])
        runs["rss_long_over_short"] = ratio(runs["long"]["peak_rss_mb"], runs["short"]["peak_rss_mb"])
    return {"training_s": trained["seconds"], "speed": speed, "memory": memory}
