"""TensorBoard event files in the run directory, beside ``metrics.jsonl`` (rank 0 writes them), and the
console line of each epoch.

``tensorboard --logdir runs`` compares runs as practitioners do with Lightning, NeMo or the HF
Trainer: step scalars (``train/*``: loss, learning rate, gradient norm, windows/s, peak memory)
every ``LOG_EVERY`` steps, epoch scalars (``epoch/*`` and ``val/*``: losses, frame error, DER and
its parts, throughput, validation's share), a timeline of one validation recording whenever DER
is computed on a :data:`FIGURE_EVERY`-th or the last epoch, and the run's config as hparams with
its final metrics.
"""

from __future__ import annotations

import time
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from agencerdas.scoring.timeline import timeline_figure

#: Epochs between timeline figures (rendering one costs about a second).
FIGURE_EVERY = 5
#: Epoch record keys drawn as scalars, by tag.
EPOCH_SCALARS = {"epoch/train_loss": "train_loss", "epoch/windows_per_s": "windows_per_s",
                 "epoch/seconds": "seconds", "epoch/val_share": "val_share", "epoch/peak_mem_mb": "peak_mem_mb",
                 "val/loss": "val_loss", "val/frame_error": "val_frame_error", "val/der": "val_der",
                 "val/missed": "val_missed", "val/false_alarm": "val_false_alarm", "val/confusion": "val_confusion"}


class Board:
    """The run's TensorBoard writer; every method does nothing where ``enabled`` is false (other ranks)."""

    def __init__(self, out: Path, enabled: bool, resumed_step: int | None = None):
        # A resumed run redoes the steps after its checkpoint: TensorBoard drops what was logged past it.
        # purge_step: events at or after it are dropped; those of the checkpoint's own step stay.
        self.writer = SummaryWriter(str(out), purge_step=None if resumed_step is None else resumed_step + 1) \
            if enabled else None
        self.seconds = 0.0  # spent writing, so each epoch record can say what TensorBoard cost it

    def steps(self, step: int, values: dict[str, float]) -> None:
        if self.writer:
            start = time.perf_counter()
            for tag, value in values.items():
                self.writer.add_scalar(f"train/{tag}", value, step)
            self.seconds += time.perf_counter() - start

    def epoch(self, record: dict, example: dict | None, last: bool) -> None:
        """An epoch record of metrics.jsonl; ``example`` (reference, hypothesis, posteriors, frame shift,
        name) of one validation recording is drawn every :data:`FIGURE_EVERY` epochs and on the ``last``."""
        if not self.writer or record.get("partial"):  # a partial epoch is redone by the resume
            return
        start = time.perf_counter()
        for tag, key in EPOCH_SCALARS.items():
            if record.get(key) is not None:
                self.writer.add_scalar(tag, record[key], record["step"])
        if example and (last or record["epoch"] % FIGURE_EVERY == 0):
            figure = timeline_figure(example["reference"], example["hypothesis"], example["posteriors"],
                                     example["frame_shift_s"], f"{example['name']}, epoch {record['epoch']}")
            self.writer.add_figure("val/timeline", figure, record["step"])
        self.writer.flush()
        self.seconds += time.perf_counter() - start

    def close(self, config: dict | None = None, final: dict | None = None) -> None:
        """The run's ``config`` as hparams, with its ``final`` metrics (none for a run that failed)."""
        if not self.writer:
            return
        if config is None:
            self.writer.close()
            return
        hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.items()}
        final = final or {}
        metrics = {f"hparam/{k}": final[k] for k in ("val_der", "val_loss", "train_loss") if final.get(k) is not None}
        self.writer.add_hparams(hparams, metrics, run_name=".")
        self.writer.close()


def epoch_line(r: dict) -> str:
    """The console line of an epoch record (shown with the progress bar)."""
    parts = [f"epoch {r['epoch']:>3}", f"train {r['train_loss']:.4f}"]
    if r.get("val_loss") is not None:
        parts.append(f"val {r['val_loss']:.4f}  frame-err {100 * r['val_frame_error']:.1f}%")
    if r.get("val_der") is not None:
        parts.append(f"DER {100 * r['val_der']:.1f}%")
    parts.append(f"{r['windows_per_s']:.0f} win/s  {r['seconds']:.1f} s  peak {r['peak_mem_mb']:.0f} MB")
    if r.get("val_share") is not None:
        parts.append(f"validation {100 * r['val_share']:.0f}% of the epoch")
    return "  ".join(parts)
