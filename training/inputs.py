"""What feeds the training loop: the view's recordings resolved into :class:`Data`, the epoch plan,
and the batches — the train split resident on the device when it fits, else streamed from the
store by DataLoader workers — with the material of simulated conversations."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader

from agencerdas.stores import Store, load_view, speakers_per_recording
from agencerdas.stores.errors import AgencerdasError

from .config import TrainConfig
from .data import WindowDataset, WindowPlan, plan_windows
from .resident import ResidentLoader, ResidentWindows, budget_bytes, choose_resident, split_bytes
from .runtime import Runtime, loader_workers, set_cpu_threads
from .transfer import to_device
from .conversations import SegmentBank
from .identities import number_speakers
from .windows import Normalizer, WindowFormat, kept_columns, scored_frames


@dataclass
class Data:
    """The training inputs resolved from a store and a view."""

    store: Store
    view_name: str
    feature_config: dict
    train: list = field(default_factory=list)  # ViewRecording, labelled, train split
    validation: list = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)  # capped base frames per train recording
    fingerprint: str = ""
    entries: dict[str, list[str]] = field(default_factory=dict)  # recording id -> [features, labels] of the view
    scored: dict[str, np.ndarray | None] = field(default_factory=dict)  # labels key -> UEM frames (None: all)
    pseudo: int = 0  # train recordings whose labels are pseudo labels
    cap_frames: int | None = None  # AUDIO_CAP_S in base frames (None: whole recordings)
    #: Per train recording, the identity of each label column (int64 (S_rec,), -1: none); see
    #: :mod:`training.identities`. Batches' ``speakers`` hold these numbers.
    speaker_table: list[np.ndarray] = field(default_factory=list)
    identities: int = 0  # speaker identities of the train split: ``speakers`` lie in [0, identities)
    split: str = ""  # which rule made the view's train/validation split (DatasetView.describe_split)

    @property
    def shift_s(self) -> float:
        """Seconds per base frame."""
        return self.feature_config["hop_length"] / self.feature_config["sample_rate"]

    def capped(self, rec) -> int:
        """Base frames of ``rec`` that training and validation use."""
        return min(rec.frames, self.cap_frames) if self.cap_frames else rec.frames

    def scored_of(self, recordings: list) -> list[np.ndarray | None]:
        """Per recording, its base frames inside the UEM (None: every frame is scored)."""
        return [self.scored.get(r.labels) for r in recordings]


def load_data(cfg: TrainConfig, store_url: str, view_name: str, storage_options: dict) -> Data:
    """Labelled train/validation recordings of the view; clear errors for what cannot train."""
    store = Store(store_url, storage_options, create=False)
    view = load_view(store, view_name)
    pick = lambda part: [view.recordings[r] for r in view.split(part) if view.recordings[r].labels]  # noqa: E731
    train = [r for r in pick("train") if not (r.pseudo and cfg.pseudo_weight == 0)]
    validation = [r for r in pick("validation") if not r.pseudo]  # never scored against pseudo labels
    entries = {rec_id: [r.features, r.labels or ""] for rec_id, r in sorted(view.recordings.items())}
    data = Data(store, view_name, view.feature_config, train, validation, fingerprint=view.fingerprint(),
                entries=entries, split=view.describe_split())
    data.pseudo = sum(r.pseudo for r in train)
    data.speaker_table, data.identities = number_speakers(train, cfg.speaker_ids)
    if not data.train:
        raise AgencerdasError(f"view {view_name!r} has no labelled recordings in its train split; add RTTMs and rerun features")
    shift = data.shift_s
    data.cap_frames = round(cfg.audio_cap_s / shift) if cfg.audio_cap_s > 0 else None
    data.lengths = [data.capped(r) for r in data.train]
    # Over the whole entry, not the cap: the normaliser reads its first frames whatever the cap.
    data.scored = {r.labels: scored_frames(store, r, r.frames) for r in data.train + data.validation}
    if max(data.lengths) < cfg.window_base_frames:
        raise AgencerdasError(
            f"window of {cfg.window} model frames ({cfg.window_base_frames * shift:.0f} s) is longer than every "
            f"training recording (longest {max(data.lengths) * shift:.0f} s); set WINDOW smaller"
        )
    return data


def window_dataset(cfg: TrainConfig, data: Data, recordings: list, normalizer: Normalizer,
                   bank: SegmentBank | None = None, identities: list[np.ndarray] | None = None) -> WindowDataset:
    """Windows of ``recordings`` (capped like training) read through the store; only windows
    planned with an augmentation seed (training's) are augmented, and only training plans hold
    simulated windows (made from ``bank``); ``identities`` per recording (None: every ``speakers`` -1)."""
    return WindowDataset(data.store.url, data.store.storage_options, recordings, [data.capped(r) for r in recordings],
                         cfg.downsample, cfg.window, cfg.pooling, cfg.max_speakers, normalizer, cfg.cache_mb,
                         cfg.pseudo_weight, cfg.augment, data.scored_of(recordings), bank, identities)


def segment_bank(cfg: TrainConfig, data: Data) -> SegmentBank | None:
    """The material of simulated conversations (``SIM_PROB`` > 0): the train split's real-labelled
    recordings (pseudo-labelled ones contribute nothing), capped like training."""
    if not cfg.sim_prob:
        return None
    # a pseudo "silence" may be speech: no background, and no voices either
    labels = [None if rec.pseudo else np.asarray(data.store.open("labels", rec.labels)["labels"][:n])
              for rec, n in zip(data.train, data.lengths)]
    min_frames = max(1, round(cfg.sim_min_segment_s / data.shift_s))
    scored = [s[:n] if s is not None else None for s, n in zip(data.scored_of(data.train), data.lengths)]
    return SegmentBank(labels, data.speaker_table, scored, min_frames, cfg.max_speakers, cfg.sim_gain_db, cfg.sim_warp)


def crowded_frames(data: Data, max_overlap: int) -> tuple[int, int]:
    """(frames with more than ``max_overlap`` speakers at once, labelled frames) of the train split, in
    base frames, capped like training and inside each recording's UEM."""
    crowded = total = 0
    for rec, n, scored in zip(data.train, data.lengths, data.scored_of(data.train)):
        counts = np.asarray(data.store.open("labels", rec.labels)["labels"][:n]).sum(axis=1)
        inside = np.ones(len(counts), dtype=bool) if scored is None else scored[: len(counts)]
        crowded += int((counts[inside] > max_overlap).sum())
        total += int(inside.sum())
    return crowded, total


def speaker_stats(cfg: TrainConfig, data: Data) -> tuple[str, float]:
    """The corpus-stats line on speakers: per annotated train recording, and what the window rule leaves out
    of the loss (:meth:`~training.windows.WindowFormat.labels`) on the fixed tiling of the train split
    (base frames, capped like training, inside the UEM; an epoch's random phase moves the count a little);
    and the share of labelled frames so left out."""
    crowded_windows = windows = left_out = total = 0
    speakers, size = cfg.max_speakers, cfg.window_base_frames
    for rec, n, scored in zip(data.train, data.lengths, data.scored_of(data.train)):
        labels = np.asarray(data.store.open("labels", rec.labels)["labels"][:n]).astype(bool)
        inside = np.ones(n, dtype=bool) if scored is None else scored[:n]
        total += int(inside.sum())
        for _, start in plan_windows([n], size, None):
            windows += 1
            rows = labels[start : start + size]
            if rows.any(axis=0).sum() <= speakers:
                continue
            crowded_windows += 1
            out = np.ones(rows.shape[1], dtype=bool)
            out[kept_columns(rows.sum(axis=0, dtype=np.int64), speakers)] = False
            left_out += int((rows[:, out].any(axis=1) & inside[start : start + size]).sum())
    counts = ", ".join(f"{k}: {v}" for k, v in speakers_per_recording(data.train).items()) or "none annotated"
    return (f"speakers per annotated train recording {counts}; {data.identities} speaker identities "
            f"({cfg.speaker_ids}); {crowded_windows} of {windows} windows (fixed tiling) hold more than "
            f"MAX_SPEAKERS={speakers} speakers and keep the {speakers} most active: {left_out} of {total} labelled "
            f"base frames ({100 * left_out / max(total, 1):.2f}%), where a speaker left out talks, are out of the loss",
            left_out / max(total, 1))


#: The share of labelled frames left out of the loss (more speakers than MAX_SPEAKERS) that is warned about at
#: the start of a run: a corpus of more speakers than slots loses a little by design (EEND-VC), not half.
LEFT_OUT_WARNING = 0.05


def corpus_report(cfg: TrainConfig, data: Data, bank: SegmentBank | None) -> tuple[list[str], list[str]]:
    """corpus-stats.txt's paragraphs (what the corpus is like, useful on its own) and the warnings a run
    starts with (what the settings leave out of the loss)."""
    line, left_out = speaker_stats(cfg, data)
    stats, warnings = [f"view '{data.view_name}' split {data.split}", line], []
    if left_out > LEFT_OUT_WARNING:
        most = max(speakers_per_recording(data.train), default=cfg.max_speakers)
        warnings.append(f"MAX_SPEAKERS={cfg.max_speakers} leaves {100 * left_out:.0f}% of the train split's labelled "
                        f"frames out of the loss (a window keeps its {cfg.max_speakers} most active speakers; "
                        f"recordings have up to {most}); raise MAX_SPEAKERS unless that is meant")
    if bank is not None:
        stats.append(f"simulated conversations ({100 * cfg.sim_prob:.0f}% of training windows) from "
                     f"{len(bank.identities)} speaker identities ({cfg.speaker_ids}); the train split's "
                     f"turn-taking:\n{bank.stats.describe(data.shift_s)}")
    if cfg.powerset:
        crowded, total = crowded_frames(data, cfg.max_overlap)
        stats.append(f"powerset classes hold at most {cfg.max_overlap} speakers at once: {crowded} of {total} "
                     f"labelled frames of the train split ({100 * crowded / max(total, 1):.2f}%) have more, and "
                     "are left out of the loss")
    return stats + [f"warning: {w}" for w in warnings], warnings


def training_plan(cfg: TrainConfig, data: Data, rt: Runtime) -> WindowPlan:
    """The epoch plan of the train split: this rank's share, augmentation seeds, simulated windows."""
    return WindowPlan(data.lengths, cfg.window_base_frames, cfg.batch, cfg.seed, cfg.shuffle_group,
                      rank=rt.rank, world=rt.world, augment=cfg.augment.active, simulate=cfg.sim_prob)


def streaming_loader(cfg: TrainConfig, data: Data, normalizer: Normalizer, rt: Runtime,
            bank: SegmentBank | None = None) -> tuple[DataLoader, WindowPlan]:
    """The streaming path: DataLoader workers cut the plan's windows from the store (simulated ones
    from ``bank``, made here when the plan needs one and none is given)."""
    dataset = window_dataset(cfg, data, data.train, normalizer, bank if bank is not None else segment_bank(cfg, data),
                             data.speaker_table)
    plan = training_plan(cfg, data, rt)
    workers = loader_workers(cfg.num_workers, rt.device)
    set_cpu_threads(cfg.threads, workers, rt.device)
    loader = DataLoader(
        dataset, batch_sampler=plan, num_workers=workers, pin_memory=rt.device.type == "cuda",
        persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
        worker_init_fn=_one_thread,
        # A private generator: the loader must not draw from the global RNG, or a
        # resumed run's dropout masks would differ from an uninterrupted one's.
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    return loader, plan


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


class DeviceBatches:
    """A DataLoader's (pinned) host batches moved to ``device``, with ``padded`` decided on the host
    before the copy, as :meth:`ResidentWindows.batch` gives it."""

    def __init__(self, loader: DataLoader, device: torch.device):
        self.loader, self.device = loader, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            padded = not bool(batch["valid"].all())  # a host tensor: no device wait
            yield {**{k: v.to(self.device, non_blocking=True) for k, v in batch.items()}, "padded": padded}


class HostWindows:
    """Windows read through the store on the host and moved in one copy: the :meth:`ResidentWindows.batch`
    interface for a split that stays off the device."""

    def __init__(self, dataset: WindowDataset, device: torch.device):
        self.dataset, self.device, self.host_lengths = dataset, device, dataset.lengths

    def batch(self, windows: list) -> dict:
        items = [self.dataset[w] for w in windows]
        host = {k: torch.stack([i[k] for i in items]).numpy()
                for k in ("feats", "labels", "mask", "valid", "weight", "speakers")}
        return {**to_device(host, self.device), "padded": not host["valid"].all()}


def validation_windows(cfg: TrainConfig, data: Data, normalizer: Normalizer, rt: Runtime,
                       train_bytes: int | None) -> ResidentWindows | HostWindows | None:
    """Where validation windows come from: the device, like the train split when it is resident there
    (``train_bytes`` on the device, None when streamed), when both splits fit one ``DATA_BUDGET`` of the
    memory free before the train split was loaded (so validation keeps pace with device-speed steps);
    else the store through the host. None without a validation split."""
    if not data.validation:
        return None
    lengths = [data.capped(r) for r in data.validation]
    needed = split_bytes(data.store, data.validation, lengths, cfg.max_speakers)
    # budget = fraction x (free now + train), and train + validation must fit it
    room = budget_bytes(rt.device, cfg.data_budget) - (1 - cfg.data_budget) * (train_bytes or 0)
    if train_bytes is not None and needed <= room:
        fmt = WindowFormat(normalizer, cfg.downsample, cfg.pooling, cfg.max_speakers)  # never augmented
        return ResidentWindows(data.store, data.validation, lengths, data.scored_of(data.validation), fmt,
                               cfg.window_base_frames, 1.0, rt.device, progress=False)
    return HostWindows(window_dataset(cfg, data, data.validation, normalizer), rt.device)


def batches(cfg: TrainConfig, data: Data, normalizer: Normalizer, rt: Runtime, progress: bool,
             bank: SegmentBank | None):
    """The epoch plan and what yields its batches: the train split resident on the device when it fits
    the budget (``DATA_ON_DEVICE``), else the streaming DataLoader; and a line saying which and why."""
    needed = split_bytes(data.store, data.train, data.lengths, cfg.max_speakers)
    resident, why = choose_resident(cfg.data_on_device, needed, budget_bytes(rt.device, cfg.data_budget))
    if not resident:
        loader, plan = streaming_loader(cfg, data, normalizer, rt, bank)
        return DeviceBatches(loader, rt.device), plan, why
    set_cpu_threads(cfg.threads, 0, rt.device)
    plan = training_plan(cfg, data, rt)
    fmt = WindowFormat(normalizer, cfg.downsample, cfg.pooling, cfg.max_speakers,
                       cfg.augment if cfg.augment.active else None)
    windows = ResidentWindows(data.store, data.train, data.lengths, data.scored_of(data.train), fmt,
                              cfg.window_base_frames, cfg.pseudo_weight, rt.device, progress and rt.main, bank,
                              data.speaker_table)
    return ResidentLoader(plan, windows), plan, why
