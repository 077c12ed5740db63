"""`agencerdas train`: read windows from the store, train SA-EEND with PIT loss, checkpoint, validate.

One loop, top to bottom: build data, model, optimizer; for each epoch: train
steps (autocast, GradScaler for fp16, accumulation, clipping, warmup + cosine
LR), validate, checkpoint atomically, append metrics. Resume restores model,
optimizer, scheduler, scaler, RNG states and the sampler position, so a resumed
run is identical to an uninterrupted one. DDP is switched on by torchrun's
environment; only rank 0 logs and writes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from stores import Store, load_view
from stores.errors import AgencerdasError

from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .data import WindowDataset, WindowPlan
from .loss import pit_bce, weighted_bce
from .model import build_model
from .resume import best_criterion, check_resume
from .runtime import Runtime, loader_workers, set_cpu_threads, setup, teardown
from .validate import validate
from .windows import Normalizer, scored_frames

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
                entries=entries)
    data.pseudo = sum(r.pseudo for r in train)
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


def lr_lambda(cfg: TrainConfig, total_steps: int):
    """Linear warmup over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` at ``total_steps``."""
    warmup = min(cfg.warmup_steps, max(1, total_steps // 10))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def window_dataset(cfg: TrainConfig, data: Data, recordings: list, normalizer: Normalizer) -> WindowDataset:
    """Windows of ``recordings`` (capped like training) read through the store; only windows
    planned with an augmentation seed (training's) are augmented."""
    return WindowDataset(data.store.url, data.store.storage_options, recordings, [data.capped(r) for r in recordings],
                         cfg.downsample, cfg.window, cfg.pooling, cfg.max_speakers, normalizer, cfg.cache_mb,
                         cfg.pseudo_weight, cfg.augment, data.scored_of(recordings))


def _loader(cfg: TrainConfig, data: Data, normalizer: Normalizer, rt: Runtime) -> tuple[DataLoader, WindowPlan]:
    dataset = window_dataset(cfg, data, data.train, normalizer)
    plan = WindowPlan(data.lengths, cfg.window_base_frames, cfg.batch, cfg.seed, cfg.shuffle_group,
                      rank=rt.rank, world=rt.world, augment=cfg.augment.active)
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


class Trainer:
    """State of one run; :meth:`fit` is the loop."""

    def __init__(self, cfg: TrainConfig, data: Data, out_dir: Path, rt: Runtime, resume: bool, progress: bool,
                 allow_view_change: bool = False):
        self.cfg, self.data, self.out, self.rt, self.progress = cfg, data, Path(out_dir), rt, progress
        self.criterion = best_criterion(cfg, bool(data.validation))
        if resume and not (self.out / "last.pt").is_file():
            raise AgencerdasError(f"cannot resume: {self.out / 'last.pt'} does not exist; drop --resume to start a new run")
        ckpt = load_checkpoint(self.out / "last.pt") if resume else None
        if ckpt:
            check_resume(cfg, ckpt, data, rt.world, self.criterion, allow_view_change)
        self.normalizer = (Normalizer.from_dict(ckpt["normalizer"]) if ckpt
                           else Normalizer.fit(data.store, data.train, data.scored_of(data.train)))
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model = build_model(cfg, data.feature_config["n_mels"]).to(rt.device)
        if rt.rank:  # dropout masks of their own on the other ranks; the epoch plan has its own seeded RNG
            torch.manual_seed(rank_seed(cfg.seed, rt.rank))
        self.loader, self.plan = _loader(cfg, data, self.normalizer, rt)
        self.val_dataset = window_dataset(cfg, data, data.validation, self.normalizer) if data.validation else None
        self.steps_per_epoch = math.ceil(len(self.plan) / cfg.accumulate)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                           fused=rt.device.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, self.steps_per_epoch * cfg.epochs))
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
        self.epoch, self.batch_in_epoch, self.step, self.best = 0, 0, 0, math.inf
        # Sums over the current epoch's batches so far, kept in mid-epoch checkpoints so a resumed
        # epoch reports the same loss as an uninterrupted one.
        self.running = {"loss": 0.0, "windows": 0, "batches": 0, "seconds": 0.0}
        self.resumed_step = ckpt["step"] if ckpt else None
        if ckpt:
            self.running = ckpt.get("running", self.running)
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.scaler.load_state_dict(ckpt["scaler"])
            self.epoch, self.batch_in_epoch, self.step = ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"]
            self.best = ckpt["best"]
            by_rank = ckpt.get("rng_by_rank") or [ckpt["rng"]]
            if rt.rank < len(by_rank):
                set_rng_state(by_rank[rt.rank])
            else:  # more processes than the checkpoint had (allowed at an epoch boundary): a fresh stream
                torch.manual_seed(rank_seed(cfg.seed, rt.rank, self.step))
        self.net = self.model
        if rt.world > 1:
            self.net = DistributedDataParallel(self.model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
        if cfg.compile:
            self.net = torch.compile(self.net)

    # ------------------------------------------------------------------ output

    def _log(self, record: dict) -> None:
        if self.rt.main:
            with open(self.out / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def _forget_metrics_after(self, step: int) -> None:
        """Drop metrics.jsonl records logged after the checkpoint being resumed (they are redone) and
        records of partial epochs (the resumed epoch's record replaces them)."""
        path = self.out / "metrics.jsonl"
        if path.is_file():
            records = [json.loads(line) for line in path.read_text().splitlines() if line]
            kept = [json.dumps(r) for r in records if r["step"] <= step and not r.get("partial")]
            path.write_text("".join(line + "\n" for line in kept))

    def _rng_states(self) -> list[dict]:
        """Every rank's RNG states, rank order (a collective under DDP: all ranks call it together)."""
        if self.rt.world == 1:
            return [rng_state()]
        states: list = [None] * self.rt.world
        torch.distributed.all_gather_object(states, rng_state())
        return states

    def _save(self, name: str, rng_states: list[dict]) -> None:
        if not self.rt.main:
            return
        save_checkpoint(self.out / name, {
            "config": self.cfg.to_dict(), "feature_config": self.data.feature_config, "best_criterion": self.criterion,
            "view": self.data.view_name, "view_fingerprint": self.data.fingerprint, "view_entries": self.data.entries,
            "store": self.data.store.url,
            "normalizer": self.normalizer.to_dict(), "pseudo_recordings": self.data.pseudo, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng_states[0], "rng_by_rank": rng_states, "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch, "step": self.step, "best": self.best, "world": self.rt.world,
            "running": self.running,
        })

    # -------------------------------------------------------------------- loop

    def _train_step(self, batch: dict, micro: int, total: int) -> torch.Tensor:
        feats, labels, mask = (batch[k].to(self.rt.device, non_blocking=True) for k in ("feats", "labels", "mask"))
        # The epoch's last batch closes a short accumulation group: its gradients must not leak into the next epoch.
        sync = (micro + 1) % self.cfg.accumulate == 0 or micro + 1 == total
        context = self.net.no_sync() if self.rt.world > 1 and not sync else torch.enable_grad()
        with context:
            with self.rt.autocast():
                logits, _ = self.net(feats, None if bool(mask.all()) else mask)
            result = pit_bce(logits, labels, mask)
            loss = result.loss
            if self.data.pseudo and self.cfg.pseudo_weight != 1.0:
                loss = weighted_bce(logits, result.permuted_labels, mask, batch["weight"].to(self.rt.device))
            self.scaler.scale(loss / self.cfg.accumulate).backward()
        if sync:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.step += 1
        return result.diar

    def _epoch(self) -> dict:
        cfg = self.cfg
        self.net.train()
        self.plan.set_epoch(self.epoch, self.batch_in_epoch)
        total = len(self.plan)
        bar = tqdm(total=total, initial=self.batch_in_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                   unit="batch", disable=not (self.progress and self.rt.main), leave=False)
        run = self.running
        loss_sum = torch.tensor(run["loss"], device=self.rt.device)
        windows, batches, start = run["windows"], run["batches"], time.perf_counter() - run["seconds"]
        for batch in self.loader:
            loss_sum += self._train_step(batch, self.batch_in_epoch, total)
            self.batch_in_epoch += 1
            windows += len(batch["feats"])
            batches += 1
            bar.update()
            if self.batch_in_epoch % 10 == 0 or self.batch_in_epoch == total:
                rate = windows * self.rt.world / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(loss=f"{loss_sum.item() / batches:.4f}", win_s=f"{rate:.0f}",
                                mem_mb=f"{self.rt.peak_memory_mb():.0f}", lr=f"{self.scheduler.get_last_lr()[0]:.1e}")
            if self.step and self.batch_in_epoch % (cfg.log_every * cfg.accumulate) == 0:
                self._log({"kind": "step", "epoch": self.epoch, "step": self.step,
                           "loss": loss_sum.item() / batches, "lr": self.scheduler.get_last_lr()[0]})
            stop = bool(cfg.max_steps and self.step >= cfg.max_steps)
            periodic = cfg.checkpoint_every and self.batch_in_epoch % cfg.accumulate == 0 and self.step % cfg.checkpoint_every == 0
            if periodic or stop:
                self.running = {"loss": loss_sum.item(), "windows": windows, "batches": batches,
                                "seconds": time.perf_counter() - start}
                if periodic:
                    self._save("last.pt", self._rng_states())
            if stop:
                break
        bar.close()
        seconds = time.perf_counter() - start
        return {"train_loss": loss_sum.item() / max(1, batches), "windows": windows * self.rt.world, "seconds": seconds,
                "windows_per_s": windows * self.rt.world / max(seconds, 1e-9), "steps_per_s": batches / max(seconds, 1e-9)}

    def fit(self) -> list[dict]:
        cfg, history = self.cfg, []
        if self.rt.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps({**self.cfg.to_dict(), "best_criterion": self.criterion},
                                                             indent=1))
            if self.resumed_step is not None:
                self._forget_metrics_after(self.resumed_step)
            else:  # a new run in an old directory starts a new log, and the old model's tuning is not its own
                (self.out / "metrics.jsonl").unlink(missing_ok=True)
                (self.out / "tuned.json").unlink(missing_ok=True)
        while self.epoch < cfg.epochs and not (cfg.max_steps and self.step >= cfg.max_steps):
            record = {"kind": "epoch", "epoch": self.epoch + 1, **self._epoch()}
            if self.rt.main:
                record.update(validate(self, with_der=cfg.der_every > 0 and (self.epoch + 1) % cfg.der_every == 0))
            record.update(step=self.step, peak_mem_mb=self.rt.peak_memory_mb(), precision=self.rt.precision,
                          train_recordings=len(self.data.train), pseudo_recordings=self.data.pseudo, pseudo=cfg.pseudo)
            # MAX_STEPS can stop inside an epoch: last.pt then keeps the position, so a resume finishes the epoch.
            finished = self.batch_in_epoch >= len(self.plan)
            if finished:
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                self.running = {"loss": 0.0, "windows": 0, "batches": 0, "seconds": 0.0}
            else:
                record["partial"] = True
            score = record.get(self.criterion)
            improved = finished and (self.criterion == "last" or (score is not None and score < self.best))
            if improved and score is not None:
                self.best = score
            record["best_criterion"] = self.criterion
            states = self._rng_states()
            self._save("last.pt", states)
            if improved or (finished and self.epoch == 1) or not (self.out / "best.pt").exists():
                self._save("best.pt", states)
            self._log(record)
            history.append(record)
            if self.rt.main and self.progress:
                tqdm.write(_epoch_line(record))
            self.rt.barrier()
        return history


def _epoch_line(r: dict) -> str:
    parts = [f"epoch {r['epoch']:>3}", f"train {r['train_loss']:.4f}"]
    if r.get("val_loss") is not None:
        parts.append(f"val {r['val_loss']:.4f}  frame-err {100 * r['val_frame_error']:.1f}%")
    if r.get("val_der") is not None:
        parts.append(f"DER {100 * r['val_der']:.1f}%")
    parts.append(f"{r['windows_per_s']:.0f} win/s  {r['seconds']:.1f} s  peak {r['peak_mem_mb']:.0f} MB")
    return "  ".join(parts)


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """A torch seed for ``rank`` (> 0) of run ``seed``, distinct from every other rank's."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def train(cfg: TrainConfig, store_url: str, view_name: str, out_dir: Path, resume: bool = False,
          storage_options: dict | None = None, progress: bool = True, allow_view_change: bool = False) -> list[dict]:
    """Train (or resume) a run in ``out_dir``; returns the per-epoch records written to metrics.jsonl.

    ``allow_view_change`` lets a resume continue on a view whose entries changed since the checkpoint."""
    rt = setup(cfg.device, cfg.precision)
    try:
        data = load_data(cfg, store_url, view_name, storage_options or {})
        return Trainer(cfg, data, out_dir, rt, resume, progress, allow_view_change).fit()
    finally:
        teardown()
