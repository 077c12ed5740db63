"""`agencerdas train`: read windows from the store, train SA-EEND (PIT or powerset, with or without the
speaker-embedding head), checkpoint, validate.

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
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from agencerdas.stores.errors import AgencerdasError

from .board import Board, epoch_line
from .checkpoint import finite_weights, load_checkpoint, load_weights, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .init import freeze, initialise, load_source
from .inputs import Data, batches, corpus_report, load_data, segment_bank, validation_windows
from .resident import ResidentLoader
from .objective import training_loss
from .model import build_model
from .resume import best_criterion, check_resume
from .rundir import RunLock, RunState, check_source_outside, clear_run, forget_metrics_after, run_state
from .runtime import Runtime, setup, teardown
from .validate import validate
from .windows import Normalizer


def lr_lambda(cfg: TrainConfig, total_steps: int):
    """Linear warmup over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` at ``total_steps``."""
    warmup = min(cfg.warmup_steps, max(1, total_steps // 10))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class Trainer:
    """State of one run; :meth:`fit` is the loop."""

    def __init__(self, cfg: TrainConfig, data: Data, out_dir: Path, rt: Runtime, resume: bool, progress: bool,
                 allow_view_change: bool = False, found: RunState | None = None):
        self.cfg, self.data, self.out, self.rt, self.progress = cfg, data, Path(out_dir), rt, progress
        # What the caller saw before deciding to start, resume or replace the run; still so when the lock is taken.
        self.found = run_state(self.out) if found is None else found
        self.criterion = best_criterion(cfg, bool(data.validation))
        if not resume:
            check_source_outside(self.out, cfg.init_from)
        if resume and not (self.out / "last.pt").is_file():
            raise AgencerdasError(f"cannot resume: {self.out / 'last.pt'} does not exist; drop --resume to start a new run")
        ckpt = load_checkpoint(self.out / "last.pt", for_resume=True) if resume else None
        if ckpt:
            check_resume(cfg, ckpt, data, rt.world, self.criterion, allow_view_change)
        source = load_source(cfg, data.feature_config) if cfg.init_from and not ckpt else None
        # A fine-tuned run keeps its provenance across resumes (the source is not read again then).
        self.provenance = source.provenance() if source else (ckpt or {}).get("initialised_from")
        if ckpt:
            saved = ckpt["normalizer"]
        else:  # a fine-tuned run keeps its source's normaliser unless told to refit it
            saved = source.normalizer if source and cfg.init_normalizer == "checkpoint" else None
        self.normalizer = (Normalizer.from_dict(saved) if saved
                           else Normalizer.fit(data.store, data.train, data.scored_of(data.train)))
        if cfg.embeds and not data.identities:
            raise AgencerdasError("the speaker-embedding loss needs labelled speakers, and this train split has none "
                                  "(only pseudo labels?); set EMBED_LOSS_WEIGHT=0")
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model = build_model(cfg, data.feature_config["n_mels"], data.identities if cfg.embeds else 0)
        if source:
            initialise(self.model, source)
        freeze(self.model, cfg.freeze_blocks)
        self.model.to(rt.device)
        if rt.rank:  # dropout masks of their own on the other ranks; the epoch plan has its own seeded RNG
            torch.manual_seed(rank_seed(cfg.seed, rt.rank))
        self.bank = segment_bank(cfg, data)
        self.loader, self.plan, self.data_path = batches(cfg, data, self.normalizer, rt, progress, self.bank)
        # Only rank 0 validates; a resident train split leaves its share of the budget to validation.
        resident = self.loader.windows.nbytes if isinstance(self.loader, ResidentLoader) else None
        self.val_windows = validation_windows(cfg, data, self.normalizer, rt, resident) if rt.main else None
        self.weighted = bool(data.pseudo and cfg.pseudo_weight != 1.0)  # the loss optimized weighs pseudo windows
        self.steps_per_epoch = math.ceil(len(self.plan) / cfg.accumulate)
        trainable = [p for p in self.model.parameters() if p.requires_grad]  # FREEZE_BLOCKS leaves some out
        self.optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                           fused=rt.device.type in ("cuda", "cpu"))  # one kernel, no host sync
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, self.steps_per_epoch * cfg.epochs))
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
        self.epoch, self.batch_in_epoch, self.step, self.best = 0, 0, 0, math.inf
        self.best_epoch: int | None = None  # the epoch whose model best.pt holds
        # Set on the device when a gradient norm is non-finite; read with the logged loss, not every step.
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=rt.device)
        # Powerset: valid frames this epoch with more speakers than a class holds (left out of the loss).
        self.dropped = torch.zeros((), dtype=torch.long, device=rt.device)
        self.grad_norm = torch.zeros((), device=rt.device)  # the last optimizer step's, read at log time
        self.board: Board | None = None  # TensorBoard, opened by fit
        self.saved = False  # whether this process wrote a checkpoint (a new run that fails before it leaves nothing)
        # Sums over the current epoch's batches so far, kept in mid-epoch checkpoints so a resumed
        # epoch reports the same loss as an uninterrupted one.
        self.running = {"loss": 0.0, "windows": 0, "batches": 0, "seconds": 0.0}
        self.resumed_step = ckpt["step"] if ckpt else None
        if ckpt:
            self._restore(ckpt)
        self.net = self.model
        if rt.world > 1:
            self.net = DistributedDataParallel(self.model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
        if cfg.compile:
            self.net = torch.compile(self.net)

    def _restore(self, ckpt: dict) -> None:
        """Model, optimizer, scheduler, scaler and position from a resume checkpoint."""
        path = self.out / "last.pt"
        table = ckpt["model"].get("speaker_table")
        if table is not None and self.model.speaker_table is not None and len(table) != len(self.model.speaker_table):
            raise AgencerdasError(f"{path}: the view's speakers changed ({len(table)} identities then, "
                                  f"{len(self.model.speaker_table)} now), and the embedding loss's speaker table cannot "
                                  f"follow them; start a new run with INIT_FROM={path} (every weight but that table)")
        load_weights(self.model, ckpt["model"], path)
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.scaler.load_state_dict(ckpt["scaler"])
            self.epoch, self.batch_in_epoch, self.step = ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"]
            self.best, self.best_epoch = ckpt["best"], ckpt.get("best_epoch")
            # Each rank its own sums (a mid-epoch resume has the checkpoint's number of ranks).
            by_rank = ckpt.get("running_by_rank") or [ckpt.get("running", {})]
            mine = {**self.running, **(by_rank[self.rt.rank] if self.rt.rank < len(by_rank) else {})}
            self.running = {"loss": float(mine["loss"]), "windows": int(mine["windows"]),
                            "batches": int(mine["batches"]), "seconds": float(mine["seconds"])}
            by_rank = ckpt.get("rng_by_rank") or [ckpt["rng"]]
            if self.rt.rank < len(by_rank):
                set_rng_state(by_rank[self.rt.rank])
            else:  # more processes than the checkpoint had (allowed at an epoch boundary): a fresh stream
                torch.manual_seed(rank_seed(self.cfg.seed, self.rt.rank, self.step))
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            raise AgencerdasError(f"{path}: its training state (optimizer, scheduler, scaler, position, RNG) does not "
                                  f"fit this run ({type(exc).__name__}: {exc}); start a new run") from None

    # ------------------------------------------------------------------ output

    def _log(self, record: dict) -> None:
        if self.rt.main:
            with open(self.out / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def _rank_states(self) -> list[dict]:
        """Every rank's RNG states and running sums of the epoch so far (``rng``, ``running``), rank order
        (a collective under DDP: all ranks call it together)."""
        mine = {"rng": rng_state(), "running": dict(self.running)}
        if self.rt.world == 1:
            return [mine]
        states: list = [None] * self.rt.world
        torch.distributed.all_gather_object(states, mine)
        return states

    def _save(self, name: str, states: list[dict]) -> None:
        if not self.rt.main:
            return
        if not finite_weights(self.model.state_dict()):  # a committed poison would be trusted downstream
            raise AgencerdasError(f"training diverged: the weights hold NaN or inf at step {self.step}, so {name} was "
                                  f"not written; {self._remedy()}")
        self.saved = True
        save_checkpoint(self.out / name, {
            "config": self.cfg.to_dict(), "feature_config": self.data.feature_config, "best_criterion": self.criterion,
            "view": self.data.view_name, "view_fingerprint": self.data.fingerprint, "view_entries": self.data.entries,
            "store": self.data.store.url,
            "normalizer": self.normalizer.to_dict(), "pseudo_recordings": self.data.pseudo, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": states[0]["rng"], "rng_by_rank": [s["rng"] for s in states],
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch, "step": self.step, "best": float(self.best),
            "best_epoch": self.best_epoch, "world": self.rt.world,
            "running": states[0]["running"], "running_by_rank": [s["running"] for s in states],
            "initialised_from": self.provenance,
        })

    # -------------------------------------------------------------------- loop

    def _train_step(self, batch: dict, micro: int, total: int) -> torch.Tensor:
        """One micro-batch on the device: forward, the loss, backward, and on the last micro-batch of an
        accumulation group the optimizer step. Returns the loss optimized (detached); reads nothing back."""
        # The epoch's last batch closes a short accumulation group: its gradients must not leak into the next epoch.
        sync = (micro + 1) % self.cfg.accumulate == 0 or micro + 1 == total
        context = self.net.no_sync() if self.rt.world > 1 and not sync else torch.enable_grad()
        with context:
            with self.rt.autocast():  # attention sees the whole recording; the UEM only decides what is scored
                output = self.net(batch["feats"], batch["valid"] if batch["padded"] else None)
            result = training_loss(self.model, output, batch, self.weighted, self.cfg.embed_loss_weight,
                                   self.cfg.embed_margin)
            loss = result.loss
            if result.dropped is not None:
                self.dropped += result.dropped
            self.scaler.scale(loss / self.cfg.accumulate).backward()
        if sync:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            # fp16's scaler skips an overflowing step and lowers its scale (checked in _check_finite); without it a
            # non-finite norm is divergence. The norm, unlike the loss, is the same on every DDP rank.
            if not self.scaler.is_enabled():
                self.nonfinite |= ~torch.isfinite(norm)
            self.grad_norm = norm.detach()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.step += 1
        return loss.detach()

    def _read(self, loss_sum: torch.Tensor) -> tuple[float, float]:
        """The running loss sum and the last gradient norm, read to the host with the divergence signs in
        one transfer; raises when the run diverged."""
        signs = [self.nonfinite.float()] + ([self.scaler._get_scale_async().float()] if self.scaler.is_enabled() else [])
        values = torch.stack([loss_sum.float(), self.grad_norm.float(), *signs]).tolist()
        self._check_finite(values[2] > 0, values[3] if len(values) > 3 else None, values[0])
        return values[0], values[1]

    def _epoch(self) -> dict:
        cfg, rt = self.cfg, self.rt
        self.net.train()
        self.plan.set_epoch(self.epoch, self.batch_in_epoch)
        total = len(self.plan)
        show = self.progress and rt.main
        bar = tqdm(total=total, initial=self.batch_in_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                   unit="batch", disable=not show, leave=False)
        run = self.running
        loss_sum = torch.tensor(run["loss"], device=rt.device)
        windows, batches, start = run["windows"], run["batches"], time.perf_counter() - run["seconds"]
        for batch in self.loader:
            loss_sum += self._train_step(batch, self.batch_in_epoch, total)
            self.batch_in_epoch += 1
            windows += len(batch["feats"])
            batches += 1
            bar.update()
            # Within an epoch the device is read here, once every LOG_EVERY optimizer steps on rank 0, and at checkpoints.
            if rt.main and self.step and self.batch_in_epoch % (cfg.log_every * cfg.accumulate) == 0:
                loss_total, norm = self._read(loss_sum)
                loss, lr, memory = loss_total / batches, self.scheduler.get_last_lr()[0], rt.peak_memory_mb()
                rate = windows * rt.world / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(loss=f"{loss:.4f}", win_s=f"{rate:.0f}", mem_mb=f"{memory:.0f}", lr=f"{lr:.1e}")
                self._log({"kind": "step", "epoch": self.epoch, "step": self.step, "loss": loss, "lr": lr})
                self.board.steps(self.step, {"loss": loss, "lr": lr, "grad_norm": norm, "windows_per_s": rate,
                                             "peak_mem_mb": memory})
            stop = bool(cfg.max_steps and self.step >= cfg.max_steps)
            periodic = cfg.checkpoint_every and self.batch_in_epoch % cfg.accumulate == 0 and self.step % cfg.checkpoint_every == 0
            if periodic or stop:
                self.running = {"loss": self._read(loss_sum)[0], "windows": windows, "batches": batches,
                                "seconds": time.perf_counter() - start}
                if periodic:
                    self._save("last.pt", self._rank_states())
            if stop:
                break
        bar.close()
        seconds = time.perf_counter() - start
        # What was optimized, over every rank's batches: one reduction and one read per epoch.
        totals = torch.stack([loss_sum.float(), torch.tensor(float(batches), device=rt.device), self.nonfinite.float(),
                              self.dropped.float()])
        if rt.world > 1:
            torch.distributed.all_reduce(totals)
        loss_total, batches_total, nonfinite, dropped = totals.tolist()
        self.dropped.zero_()
        self._check_finite(nonfinite > 0, self.scaler.get_scale() if self.scaler.is_enabled() else None, loss_total)
        return {"train_loss": loss_total / max(1.0, batches_total), "windows": windows * rt.world, "seconds": seconds,
                **({"overlap_frames_dropped": int(dropped)} if cfg.powerset else {}),
                "windows_per_s": windows * rt.world / max(seconds, 1e-9), "steps_per_s": batches / max(seconds, 1e-9)}

    def _remedy(self) -> str:
        return (f"lower LR (this run: {self.cfg.lr:g}) or GRAD_CLIP ({self.cfg.grad_clip:g})"
                + (", or train with PRECISION=fp32" if self.rt.amp_dtype is not None else "")
                + "; last.pt and best.pt still hold the last finite state")

    def _check_finite(self, nonfinite: bool, scale: float | None, loss: float) -> None:
        """Stop the run before anything is saved once a gradient norm or the summed training ``loss`` was
        non-finite (the loss can be while the gradients are not: EMBED_MARGIN=1e38), or fp16's loss ``scale``
        collapsed below 1 (every step overflowing; an overflowing step's loss is expected then)."""
        collapsed = scale is not None and scale < 1.0
        lost = scale is None and not math.isfinite(loss)
        if nonfinite or collapsed or lost:
            what = ("the fp16 loss scale fell below 1 (every step overflows)" if collapsed else
                    "a gradient norm became NaN or inf" if nonfinite else "the training loss became NaN or inf")
            raise AgencerdasError(f"training diverged at step {self.step} (epoch {self.epoch + 1}): {what}; "
                                  f"{self._remedy()}")

    def fit(self) -> list[dict]:
        """The run, holding the run directory's lock (rank 0) from its first write to its end."""
        lock = RunLock(self.out)
        if self.rt.main:
            lock.acquire(self.found)
        try:
            return self._fit()
        except BaseException:
            if self.rt.main and self.resumed_step is None and not self.saved:  # no run to resume: nothing left
                if self.board:
                    self.board.close()
                clear_run(self.out)
            raise
        finally:
            lock.release()

    def _fit(self) -> list[dict]:
        cfg, history, warnings = self.cfg, [], []
        if self.rt.main:
            if self.resumed_step is not None:
                forget_metrics_after(self.out, self.resumed_step)
            else:  # a new run in an old directory (--overwrite) keeps nothing of the old run's
                clear_run(self.out)
            (self.out / "config.json").write_text(json.dumps({**self.cfg.to_dict(), "best_criterion": self.criterion,
                                                              "initialised_from": self.provenance}, indent=1))
            stats, warnings = corpus_report(cfg, self.data, self.bank)
            (self.out / "corpus-stats.txt").write_text("\n".join(stats) + "\n")
            if self.progress:
                tqdm.write("\n".join(stats))
            for warning in warnings:  # loudly, whatever the progress display
                print(f"agencerdas: warning: {warning}", file=sys.stderr)
        self.board = Board(self.out, self.rt.main, self.resumed_step)
        while self.epoch < cfg.epochs and not (cfg.max_steps and self.step >= cfg.max_steps):
            board_s = self.board.seconds
            record, example = {"kind": "epoch", "epoch": self.epoch + 1, **self._epoch()}, None
            if warnings and not history:  # once, for the summary
                record["warnings"] = warnings
            if self.rt.main:
                started = time.perf_counter()
                scores, example = validate(self, with_der=cfg.der_every > 0 and (self.epoch + 1) % cfg.der_every == 0)
                record.update(scores)
                val_s = time.perf_counter() - started
                # Validation must never dominate an epoch: its share is logged and shown every epoch.
                record.update(val_seconds=val_s, val_share=val_s / max(val_s + record["seconds"], 1e-9))
            record.update(step=self.step, peak_mem_mb=self.rt.peak_memory_mb(), precision=self.rt.precision,
                          data_path=self.data_path,
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
            save_best = improved or (finished and self.epoch == 1) or not (self.out / "best.pt").exists()
            if save_best:
                self.best_epoch = record["epoch"]
            # The run's best so far, resumed runs included (this process's history may not hold it).
            record.update(best_criterion=self.criterion, best_epoch=self.best_epoch,
                          best=self.best if math.isfinite(self.best) else None)
            states = self._rank_states()
            self._save("last.pt", states)
            if save_best:
                self._save("best.pt", states)
            self.board.epoch(record, example, last=self.epoch >= cfg.epochs)
            record["tensorboard_s"] = self.board.seconds - board_s  # its cost, figures included
            self._log(record)
            history.append(record)
            if self.rt.main and self.progress:
                tqdm.write(epoch_line(record))
            self.rt.barrier()
        self.board.close({**cfg.to_dict(), "best_criterion": self.criterion}, history[-1] if history else {})
        return history


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """A torch seed for ``rank`` (> 0) of run ``seed``, distinct from every other rank's."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def train(cfg: TrainConfig, store_url: str, view_name: str, out_dir: Path, resume: bool = False,
          storage_options: dict | None = None, progress: bool = True, allow_view_change: bool = False) -> list[dict]:
    """Train (or resume) a run in ``out_dir``; returns the per-epoch records written to metrics.jsonl.

    ``allow_view_change`` lets a resume continue on a view whose entries changed since the checkpoint."""
    found = run_state(out_dir)
    if int(os.environ.get("RANK", 0)) == 0:  # the owner under DDP; refused before loading anything
        RunLock(Path(out_dir)).check_free()
    rt = setup(cfg.device, cfg.precision)
    try:
        data = load_data(cfg, store_url, view_name, storage_options or {})
        return Trainer(cfg, data, out_dir, rt, resume, progress, allow_view_change, found).fit()
    finally:
        teardown()
