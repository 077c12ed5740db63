"""Window reads (section 3): training windows per second from the store vs from memory vs the notebook.

Four ways to get the same kind of window (``cfg.window_base_frames`` base frames,
downsampled at read time), each in 1 process (the loop itself, ``num_workers=0``)
and in 2 reader processes (a DataLoader with ``num_workers=2``):

* ``trainer_cold`` / ``trainer_warm``: the trainer's own loader (``training.inputs.streaming_loader``:
  ``WindowDataset`` with its per-worker entry cache, batches in ``WindowPlan`` epoch
  order); cold = a fresh loader per epoch (every entry read from the store once),
  warm = later epochs of one persistent loader;
* ``zarr``: the trainer's :func:`~training.windows.cut_window` (normalise, augment,
  downsample) one window at a time at random offsets, straight from the Zarr arrays;
* ``numpy``: the same work on the same windows, from entries loaded into memory beforehand;
* ``notebook``: per item, decode the recording with librosa and compute its log-mel.

Rates are windows per second of steady state (after the first batch, which carries
process start and warm-up), except ``trainer_cold``, which times whole epochs.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from agencerdas.stores import EntryReader, Store, ViewRecording

from agencerdas.training.config import TrainConfig
from agencerdas.training.conversations import SegmentBank
from agencerdas.training.inputs import Data, load_data, segment_bank, streaming_loader, window_dataset
from agencerdas.training.runtime import setup
from agencerdas.training.data import SIMULATED, WindowPlan
from agencerdas.training.resident import ResidentWindows
from agencerdas.training.windows import Normalizer, WindowFormat, cut_window

from .measure import Throughput, epochs, iterate_for, ratio

PROCESSES = (1, 2)
Window = tuple[int, int, int]  # (recording, start in base frames, augmentation seed)


class EntryWindows(Dataset):
    """``dataset[(rec, start, seed)]``: one window cut by the trainer's own :func:`cut_window`, from the
    store's Zarr arrays or (``in_memory``) from the same arrays loaded into numpy beforehand.

    Both do the trainer's work per window (normalise, augment with the window's seed when the
    preset augments, downsample, mask), so the ratio between them is the cost of the storage alone.
    Arrays are opened lazily in each process (so forked DataLoader workers open their own) and kept
    for the process's lifetime; in-memory entries are loaded up front, before workers fork, and
    shared copy-on-write.
    """

    def __init__(self, store_url: str, recordings: list[ViewRecording], cfg: TrainConfig, normalizer: Normalizer,
                 in_memory: bool):
        self.store_url, self.recordings, self.in_memory = store_url, recordings, in_memory
        self.frames = cfg.window_base_frames
        self.format = WindowFormat(normalizer, cfg.downsample, cfg.pooling, cfg.max_speakers,
                                   cfg.augment if cfg.augment.active else None)
        self._store: Store | None = None
        self._arrays: dict[int, tuple[Any, Any, int]] = {}
        self._pid = os.getpid()
        if in_memory:
            for i in range(len(recordings)):
                feats, labels, n = self._open(i)
                self._arrays[i] = (np.asarray(feats[:]), np.asarray(labels[:]), n)

    def _open(self, index: int) -> tuple[Any, Any, int]:
        if self._store is None:
            self._store = Store(self.store_url, create=False)
        rec = self.recordings[index]
        reader = EntryReader(self._store, rec.features, rec.labels)
        return reader.features, reader.labels, reader.frames

    def _entry(self, index: int) -> tuple[Any, Any, int]:
        if not self.in_memory and self._pid != os.getpid():  # zarr handles do not cross a fork
            self._store, self._arrays, self._pid = None, {}, os.getpid()
        if index not in self._arrays:
            self._arrays[index] = self._open(index)
        return self._arrays[index]

    def __getitem__(self, item: Window) -> dict[str, torch.Tensor]:
        index, start, seed = item
        feats, labels, n = self._entry(index)
        cut = cut_window(self.format, feats, labels, start, self.frames, n, np.random.default_rng(seed))
        return {"feats": torch.from_numpy(cut.features), "labels": torch.from_numpy(cut.labels),
                "mask": torch.from_numpy(cut.mask)}


class NotebookWindows(Dataset):
    """``dataset[(rec, start)]``: decode the whole recording with librosa, log-mel it, cut the window."""

    def __init__(self, recordings: list[ViewRecording], cfg: TrainConfig, feature_config: dict):
        self.paths = [rec.source for rec in recordings]
        self.frames, self.downsample, self.feature_config = cfg.window_base_frames, cfg.downsample, feature_config

    def __getitem__(self, item: Window) -> dict[str, torch.Tensor]:
        import librosa

        index, start, _ = item
        c = self.feature_config
        signal, rate = librosa.load(self.paths[index], sr=c["sample_rate"])
        mel = librosa.feature.melspectrogram(y=signal, sr=rate, n_fft=c["win_length"], hop_length=c["hop_length"],
                                             n_mels=c["n_mels"], fmin=c["fmin"], fmax=c["fmax"])
        feats = np.log(np.maximum(mel, c["log_floor"])).T[start : start + self.frames].astype(np.float32)
        n = (len(feats) // self.downsample) * self.downsample
        return {"feats": torch.from_numpy(feats[:n].reshape(n // self.downsample, -1))}


def random_windows(lengths: list[int], frames: int, batch: int, seed: int) -> Iterator[list[Window]]:
    """Endless batches of windows: recording drawn in proportion to its length, start uniform inside it,
    and an augmentation seed."""
    rng = np.random.default_rng(seed)
    weights = np.asarray(lengths, dtype=np.float64) / sum(lengths)
    while True:
        picks = rng.choice(len(lengths), size=batch, p=weights)
        yield [(int(i), int(rng.integers(0, max(1, lengths[i] - frames + 1))), int(rng.integers(0, 2**63)))
               for i in picks]


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


def _windows(batch: dict[str, torch.Tensor]) -> int:
    return len(batch["feats"])


def _rate(dataset: Dataset, batches: Iterator[list[Window]], processes: int, seconds: float,
          min_items: int = 1, max_items: int | None = None) -> Throughput:
    """Windows/s through a DataLoader with ``processes`` readers; one warm-up batch per reader is not counted."""
    workers = 0 if processes == 1 else processes
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers, worker_init_fn=_one_thread,
                        prefetch_factor=4 if workers else None)
    return iterate_for(loader, _windows, seconds, min_items, max_items, skip=processes)


def _trainer_cold(cfg: TrainConfig, data: Data, normalizer: Normalizer, seconds: float) -> Throughput:
    """Whole epochs, each through a fresh trainer loader (empty entry caches, new workers), until ``seconds``."""
    rt = setup("cpu", "fp32")
    windows, elapsed, epoch = 0, 0.0, 0
    while elapsed < seconds:
        start = time.perf_counter()
        loader, plan = streaming_loader(cfg, data, normalizer, rt)
        plan.set_epoch(epoch)
        windows += sum(_windows(batch) for batch in loader)
        del loader
        elapsed += time.perf_counter() - start
        epoch += 1
    return Throughput(windows, elapsed)


def _trainer_warm(cfg: TrainConfig, data: Data, normalizer: Normalizer, seconds: float) -> Throughput:
    """Epochs after the first through one persistent trainer loader, until ``seconds``."""
    loader, plan = streaming_loader(cfg, data, normalizer, setup("cpu", "fp32"))
    return iterate_for(epochs(plan, loader), _windows, seconds, skip=len(plan))  # the first epoch warms the caches


def simulated_windows(batch: int, seed: int) -> Iterator[list[tuple[int, int, int]]]:
    """Endless batches of simulated conversations only: (SIMULATED, recipe seed, augmentation seed)."""
    rng = np.random.default_rng(seed)
    while True:
        yield [(SIMULATED, int(rng.integers(0, 2**63)), int(rng.integers(0, 2**63))) for _ in range(batch)]


def _one_thread_rate(batches: Iterator[dict[str, torch.Tensor]], seconds: float) -> Throughput:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return iterate_for(batches, _windows, seconds, skip=1)
    finally:
        torch.set_num_threads(threads)


def _resident(cfg: TrainConfig, data: Data, normalizer: Normalizer, bank: SegmentBank | None,
              seconds: float) -> dict[str, Any]:
    """Windows/s of the device-resident batch builder on this CPU with one thread, the preset's
    augmentation: epoch-plan order with the preset's simulated share (``trainer``, as the trainer
    reads) and without (``real``), and simulated windows alone (``simulated``, when the preset
    simulates); and its bytes of memory traffic per real window."""
    fmt = WindowFormat(normalizer, cfg.downsample, cfg.pooling, cfg.max_speakers,
                       cfg.augment if cfg.augment.active else None)
    windows = ResidentWindows(data.store, data.train, data.lengths, data.scored_of(data.train), fmt,
                              cfg.window_base_frames, cfg.pseudo_weight, torch.device("cpu"), progress=False, bank=bank)
    plans = {"trainer": cfg.sim_prob, "real": 0.0} if bank is not None else {"trainer": 0.0}
    out = {}
    for name, share in plans.items():
        plan = WindowPlan(data.lengths, cfg.window_base_frames, cfg.batch, cfg.seed, cfg.shuffle_group,
                          augment=cfg.augment.active, simulate=share)
        out[name] = _one_thread_rate(map(windows.batch, epochs(plan)), seconds).to_dict()
    if bank is not None:
        out["simulated"] = _one_thread_rate(map(windows.batch, simulated_windows(cfg.batch, cfg.seed)), seconds).to_dict()
    n_mels = windows.features.shape[1]
    # float16 gathered, written as float32, read and written once more by the fused transform
    out["bytes_per_window"] = cfg.window_base_frames * n_mels * (windows.features.element_size() + 3 * 4)
    return out


def _streamed_simulated(cfg: TrainConfig, data: Data, normalizer: Normalizer, bank: SegmentBank,
                        seconds: float) -> Throughput:
    """Simulated windows/s of the streaming path in one process (rendered on the host from the store's rows)."""
    dataset = window_dataset(cfg, data, data.train, normalizer, bank)
    return _rate(dataset, simulated_windows(cfg.batch, cfg.seed), 1, seconds)


def read_section(store_url: str, view: str, cfg: TrainConfig, budget_s: float, notebook_items: int,
                 progress: Callable[[str], None]) -> dict[str, Any]:
    """Windows/s of every reader in 1 and 2 processes, and the ratios the targets use."""
    data = load_data(cfg, store_url, view, {})
    normalizer = Normalizer.fit(data.store, data.train)
    frames = cfg.window_base_frames
    runs: dict[str, dict[str, Any]] = {name: {} for name in ("trainer_cold", "trainer_warm", "zarr", "numpy", "notebook")}
    zarr_windows = EntryWindows(store_url, data.train, cfg, normalizer, in_memory=False)
    numpy_windows = EntryWindows(store_url, data.train, cfg, normalizer, in_memory=True)
    notebook = NotebookWindows(data.train, cfg, data.feature_config)
    for processes in PROCESSES:
        key = str(processes)
        workers_cfg = dataclasses.replace(cfg, num_workers=0 if processes == 1 else processes)
        progress(f"window reads, {processes} process(es): trainer loader, zarr, numpy, notebook")
        runs["trainer_cold"][key] = _trainer_cold(workers_cfg, data, normalizer, budget_s).to_dict()
        runs["trainer_warm"][key] = _trainer_warm(workers_cfg, data, normalizer, budget_s).to_dict()
        for name, dataset in (("zarr", zarr_windows), ("numpy", numpy_windows)):
            batches = random_windows(data.lengths, frames, cfg.batch, seed=processes)
            runs[name][key] = _rate(dataset, batches, processes, budget_s).to_dict()
        batches = random_windows(data.lengths, frames, 1, seed=processes)
        runs["notebook"][key] = _rate(notebook, batches, processes, 0.0, notebook_items, notebook_items).to_dict()
    progress("window reads: the device-resident batch builder, 1 thread; simulated conversations")
    bank = segment_bank(cfg, data)
    resident = _resident(cfg, data, normalizer, bank, budget_s)
    runs["resident"] = {"1": resident.pop("trainer")}
    runs["resident"]["1"]["bytes_per_window"] = traffic = resident.pop("bytes_per_window")
    runs["resident"]["1"]["gb_per_s"] = runs["resident"]["1"]["per_s"] * traffic / 1e9
    if bank is not None:
        streamed = _streamed_simulated(cfg, data, normalizer, bank, budget_s).to_dict()
        runs["simulation"] = {"sim_prob": cfg.sim_prob, "resident_real": resident["real"],
                              "resident_simulated": resident["simulated"], "streamed_simulated": streamed}
    ratios = {
        f"{name}_vs_{base}": {k: ratio(runs[name][k]["per_s"], runs[base][k]["per_s"]) for k in map(str, PROCESSES)}
        for name in ("trainer_cold", "trainer_warm", "zarr")
        for base in ("numpy", "notebook")
    }
    ratios["resident_vs_trainer_warm"] = {"1": ratio(runs["resident"]["1"]["per_s"], runs["trainer_warm"]["1"]["per_s"])}
    if bank is not None:  # what the simulated share costs the device path (the trainer's mix vs real windows only)
        ratios["resident_trainer_vs_real"] = {"1": ratio(runs["resident"]["1"]["per_s"], resident["real"]["per_s"])}
    return {"preset": cfg.preset, "window_base_frames": frames, "downsample": cfg.downsample, "batch": cfg.batch,
            "cache_mb": cfg.cache_mb, "shuffle_group": cfg.shuffle_group, "train_recordings": len(data.train),
            "train_frames": int(sum(data.lengths)), **runs, "ratios": ratios}
