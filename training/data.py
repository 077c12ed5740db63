"""Fixed-length training windows streamed from the store.

Nothing is decoded or resampled here: windows are cut from stored base-rate
features and labels, normalised, and downsampled to the model frame rate.

Read throughput is a design problem: every Zarr chunk read carries a fixed
cost, so reading each window on its own runs at a fraction of in-memory speed.
Two things close the gap:

* the epoch plan is *chunk-aware*: recordings are visited in shuffled groups of
  ``shuffle_group`` and their windows shuffled within the group, so consecutive
  batches touch few recordings;
* each DataLoader worker keeps a bounded LRU cache (``cache_mb``) of whole decoded
  entries, so a recording is read from the store once and then sliced in memory.

Memory per worker is bounded by ``cache_mb`` plus one batch, whatever the
recordings' lengths (an entry larger than the cache is read window by window).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from agencerdas.stores import EntryReader, Store, ViewRecording

from .augment import Augment
from .conversations import SegmentBank, render
from .identities import NO_IDENTITY, column_identities
from .windows import Normalizer, WindowFormat, cut_window

# (recording index, start in base frames[, augmentation seed]); training plans add the seed
# so that a window's perturbation depends on the plan alone, not on which worker reads it.
# A simulated conversation is (SIMULATED, recipe seed[, augmentation seed]).
Window = tuple[int, ...]
SIMULATED = -1


def plan_windows(lengths: list[int], window: int, rng: np.random.Generator | None) -> list[Window]:
    """Windows of ``window`` base frames that cover every frame of every recording.

    A recording of n frames gets ceil(n / window) windows on a tiling whose phase is
    random per epoch (``rng``) or zero (``rng=None``, validation); windows are clamped
    inside the recording, and a recording shorter than one window gets one padded window.
    """
    windows = []
    for index, n in enumerate(lengths):
        count = max(1, -(-n // window))
        phase = int(rng.integers(0, count * window - n + 1)) if rng is not None and n > window else 0
        for j in range(count):
            windows.append((index, int(min(max(j * window - phase, 0), max(n - window, 0)))))
    return windows


class WindowPlan(Sampler[list[Window]]):
    """Batch sampler: the epoch's windows in a seeded, chunk-aware order, split across ranks.

    The plan depends only on (seed, epoch, recording lengths), so it is identical on
    every rank and after a resume; ``start_batch`` skips the batches already trained.
    Each rank takes every ``world``-th batch; the batch list is padded by wrapping so
    all ranks run the same number of steps, and an epoch is the same data whatever
    the number of processes. With ``augment`` (and ``shuffle``) every window carries
    a third element, the seed of its augmentation, drawn from the same epoch RNG. With
    ``simulate`` (and ``shuffle``) that fraction of the epoch's windows, drawn by the same RNG,
    become simulated conversations (``(SIMULATED, recipe seed[, augmentation seed])``): an
    epoch keeps its number of steps and trades some real windows for new line-ups.
    """

    def __init__(self, lengths: list[int], window: int, batch: int, seed: int, shuffle_group: int,
                 shuffle: bool = True, rank: int = 0, world: int = 1, augment: bool = False, simulate: float = 0.0):
        self.lengths, self.window, self.batch = lengths, window, batch
        self.seed, self.shuffle_group, self.shuffle, self.augment = seed, shuffle_group, shuffle, augment
        self.simulate = simulate
        self.rank, self.world = rank, world
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _global_batches(self) -> list[list[Window]]:
        rng = np.random.default_rng([self.seed, self.epoch]) if self.shuffle else None
        windows = plan_windows(self.lengths, self.window, rng)
        if rng is not None:
            by_rec: dict[int, list[Window]] = {}
            for w in windows:
                by_rec.setdefault(w[0], []).append(w)
            order = rng.permutation(len(self.lengths))
            windows = []
            for g in range(0, len(order), self.shuffle_group):
                group = [w for rec in order[g : g + self.shuffle_group] for w in by_rec.get(int(rec), [])]
                windows += [group[i] for i in rng.permutation(len(group))]
            if self.simulate:
                replaced = rng.random(len(windows)) < self.simulate
                recipes = rng.integers(0, 2**63, len(windows))
                windows = [(SIMULATED, int(r)) if sim else w for w, sim, r in zip(windows, replaced, recipes)]
            if self.augment:
                windows = [(*w, int(s)) for w, s in zip(windows, rng.integers(0, 2**63, len(windows)))]
        batches = [windows[i : i + self.batch] for i in range(0, len(windows), self.batch)]
        if self.world > 1 and len(batches) % self.world:
            # Cycle, not slice: with fewer batches than ranks a slice would leave some ranks short (a DDP hang).
            batches += [batches[i % len(batches)] for i in range(self.world - len(batches) % self.world)]
        return batches

    def __len__(self) -> int:
        return len(self._global_batches()[self.rank :: self.world])

    def __iter__(self):
        yield from self._global_batches()[self.rank :: self.world][self.start_batch :]


class WindowDataset(Dataset):
    """Map-style dataset: ``dataset[(rec, start)]`` is one training window.

    Returns a dict of float32 ``feats`` (window, D), float32 ``labels`` (window, S), bool ``mask``
    (window,) (frames the loss scores: inside the recording and its UEM, and no speaker the window
    leaves out active) and bool ``valid`` (window,) (frames inside the recording: the attention mask)
    at the model frame rate; D = downsample * n_mels for ``stack`` pooling, n_mels for ``mean``.
    Frames past a recording's (capped) end are zero and masked.
    ``weight`` (scalar) is ``pseudo_weight`` for windows of pseudo-labelled recordings, else 1.
    ``speakers`` (S,) int64 is the identity of each label column (``identities``: per recording, the
    identity of each stored column, :mod:`training.identities`; a simulated window's from its recipe),
    -1 for a column silent in the window or without identity.
    A window with an augmentation seed is perturbed by ``augment`` (raw log-mel perturbations
    before normalisation, frequency masks after); one without is returned as stored.
    """

    def __init__(self, store_url: str, storage_options: dict, recordings: list[ViewRecording], lengths: list[int],
                 downsample: int, window: int, pooling: str, max_speakers: int, normalizer: Normalizer,
                 cache_mb: int, pseudo_weight: float = 1.0, augment: Augment | None = None,
                 scored: list[np.ndarray | None] | None = None, bank: SegmentBank | None = None,
                 identities: list[np.ndarray] | None = None):
        self.store_url, self.storage_options = store_url, storage_options
        self.recordings, self.lengths = recordings, lengths
        self.frames = window * downsample  # base frames per window
        self.cache_bytes = cache_mb * 2**20
        self.pseudo_weight = pseudo_weight
        self.scored = scored or [None] * len(recordings)  # per recording: its UEM frames, None for all
        self.bank = bank  # simulated conversations' material (training windows only)
        self.identities = identities or [None] * len(recordings)  # per recording, None: no identities
        self.format = WindowFormat(normalizer, downsample, pooling, max_speakers, augment)
        self._store: Store | None = None
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cached_bytes = 0
        self.reads = 0  # store reads by this process (cache misses), for benchmarks

    def __getstate__(self) -> dict:
        # Each worker opens the store itself and starts with an empty cache.
        state = self.__dict__.copy()
        state.update(_store=None, _cache=OrderedDict(), _cached_bytes=0, reads=0)
        return state

    def _entry(self, index: int) -> tuple[np.ndarray, np.ndarray] | EntryReader:
        """The whole (capped) entry from the LRU cache, or a reader when it does not fit."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        if self._store is None:
            self._store = Store(self.store_url, self.storage_options, create=False)
        rec = self.recordings[index]
        reader = EntryReader(self._store, rec.features, rec.labels)
        n = self.lengths[index]
        size = n * (reader.features.shape[1] * reader.features.dtype.itemsize + reader.labels.shape[1])
        if size > self.cache_bytes:
            return reader
        self.reads += 1
        entry = (np.asarray(reader.features[:n]), np.asarray(reader.labels[:n]))
        self._cache[index] = entry
        self._cached_bytes += size
        while self._cached_bytes > self.cache_bytes:
            _, (f, y) = self._cache.popitem(last=False)
            self._cached_bytes -= f.nbytes + y.nbytes
        return entry

    def _rows(self, index: int, start: int, n: int) -> np.ndarray:
        """Stored feature rows [start, start + n) of recording ``index`` (a simulated window's material)."""
        entry = self._entry(index)
        return np.asarray((entry.features if isinstance(entry, EntryReader) else entry[0])[start : start + n])

    def _simulated(self, seed: int, rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
        if self.bank is None:
            raise ValueError("a simulated window needs the dataset's SegmentBank")
        recipe = self.bank.recipe(seed, self.frames)
        x = self.format.features(render(recipe, self._rows), self.frames, rng)
        y = self.format.labels(recipe.labels(self.format.max_speakers), self.frames).activity
        return {
            "feats": torch.from_numpy(x),
            "labels": torch.from_numpy(y.astype(np.float32)),
            "mask": torch.from_numpy(self.format.mask(self.frames, self.frames)),
            "valid": torch.from_numpy(self.format.mask(self.frames, self.frames)),
            "weight": torch.tensor(1.0),
            "speakers": torch.from_numpy(_heard(recipe.speakers(self.format.max_speakers), y)),
        }

    def __getitem__(self, item: Window) -> dict[str, torch.Tensor]:
        index, start, *aug_seed = item
        rng = np.random.default_rng(aug_seed[0]) if aug_seed else None
        if index == SIMULATED:
            return self._simulated(start, rng)
        entry = self._entry(index)
        if isinstance(entry, EntryReader):
            self.reads += 1
            feats, labels = entry.features, entry.labels
        else:
            feats, labels = entry
        cut = cut_window(self.format, feats, labels, start, self.frames, self.lengths[index], rng, self.scored[index])
        # one more than the stored columns: the last is -1, which an added silent column (-1) picks
        ids = column_identities(self.identities[index], labels.shape[1] + 1)
        return {
            "feats": torch.from_numpy(cut.features),
            "labels": torch.from_numpy(cut.labels.astype(np.float32)),
            "mask": torch.from_numpy(cut.mask),
            "valid": torch.from_numpy(self.format.mask(max(0, min(self.frames, self.lengths[index] - start)), self.frames)),
            "weight": torch.tensor(self.pseudo_weight if self.recordings[index].pseudo else 1.0),
            "speakers": torch.from_numpy(_heard(ids[cut.columns], cut.labels)),
        }


def _heard(identities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(S,) int64: ``identities`` of the label columns, :data:`NO_IDENTITY` where ``labels`` (frames, S)
    has a silent column (no speaker to learn from in this window)."""
    return np.where(labels.any(axis=0), identities, NO_IDENTITY).astype(np.int64)
