"""Training and inference figures, written as PNG files.

Figures are built on matplotlib's Agg canvas directly (no ``pyplot``), so
nothing ever tries to open a display and no global figure state leaks between
calls; this works on headless training machines and in worker threads.

``metrics.jsonl`` (one JSON object per line, written by the trainer)::

    {"kind": "epoch", "epoch": int, "step": int, "train_loss": float,
     "val_loss": float | null, "val_der": float | null, ...}
    {"kind": "step", "step": int, "epoch": int, "loss": float, ...}
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from agencerdas.scoring.timeline import timeline_figure
from agencerdas.stores.segments import Segment
from agencerdas.stores.errors import AgencerdasError

METRICS_FILE = "metrics.jsonl"
_DPI = 100

def _save(figure: Figure, out_png: Path) -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(out_png, format="png", dpi=_DPI)
    return out_png


def _epoch_records(run_dir: Path) -> list[dict]:
    """Epoch records of one run, one per epoch (the last written wins), by epoch."""
    path = Path(run_dir) / METRICS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AgencerdasError(f"{path}: cannot read training metrics ({exc}); is {run_dir} a run directory?") from None
    by_epoch: dict[int, dict] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AgencerdasError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
        if isinstance(record, dict) and record.get("kind") == "epoch":
            # A resumed run may write an epoch again; its latest record is the valid one.
            by_epoch[int(record["epoch"])] = record
    if not by_epoch:
        raise AgencerdasError(f"{path}: no epoch records yet; wait for the first epoch to finish or leave {run_dir} out")
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) for the records where ``key`` is present and not null."""
    points = [(r["epoch"], float(r[key])) for r in records if r.get(key) is not None]
    return [e for e, _ in points], [v for _, v in points]


def plot_losses(run_dirs: list[Path], out_png: Path) -> Path:
    """Train (solid) and validation (dashed) loss per epoch for one or several runs.

    Each run keeps one colour and is labelled by its directory name. When any
    run logged a validation DER, a second panel below shows it in percent.

    Args:
        run_dirs: run directories, each holding a ``metrics.jsonl``.
        out_png: where to write the figure (parent directories created).

    Returns:
        ``out_png``.

    Raises:
        AgencerdasError: a metrics file is missing, malformed or has no epoch record.
    """
    if not run_dirs:
        raise AgencerdasError("no run directories given to plot")
    runs = [(Path(run_dir).name, _epoch_records(run_dir)) for run_dir in run_dirs]
    with_der = any(_series(records, "val_der")[0] for _, records in runs)
    figure = Figure(figsize=(9, 7 if with_der else 4.5))
    axes = figure.subplots(2 if with_der else 1, 1, sharex=True, squeeze=False)[:, 0]
    loss_axes = axes[0]
    for index, (name, records) in enumerate(runs):
        colour = f"C{index % 10}"
        epochs, values = _series(records, "train_loss")
        loss_axes.plot(epochs, values, color=colour, marker="o", markersize=3, label=f"{name} train")
        epochs, values = _series(records, "val_loss")
        if epochs:
            loss_axes.plot(epochs, values, color=colour, linestyle="--", marker="o", markersize=3, label=f"{name} val")
        if with_der:
            epochs, values = _series(records, "val_der")
            if epochs:
                axes[1].plot(epochs, [100 * v for v in values], color=colour, marker="o", markersize=3, label=name)
    loss_axes.set_ylabel("loss")
    loss_axes.set_title("training curves")
    loss_axes.grid(alpha=0.3)
    loss_axes.legend(fontsize="small")
    if with_der:
        axes[1].set_ylabel("validation DER (%)")
        axes[1].grid(alpha=0.3)
        axes[1].legend(fontsize="small")
    axes[-1].set_xlabel("epoch")
    # Epochs are integers: no 0.5-epoch ticks.
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    return _save(figure, out_png)


def plot_timeline(
    reference: list[Segment],
    hypothesis: list[Segment],
    posteriors: np.ndarray | None,
    frame_shift_s: float,
    out_png: Path,
    title: str,
) -> Path:
    """:func:`scoring.timeline.timeline_figure` written to ``out_png`` (parent directories created);
    returns ``out_png``."""
    return _save(timeline_figure(reference, hypothesis, posteriors, frame_shift_s, title), out_png)


def plot_attention(attention: np.ndarray, out_png: Path, title: str = "") -> Path:
    """Self-attention weights as heat maps.

    Args:
        attention: (frames, frames) for one map, or (heads, frames, frames) for
            one subplot per head; rows are queries, columns keys.
        out_png: where to write the figure (parent directories created).
        title: figure title.

    Returns:
        ``out_png``.
    """
    attention = np.asarray(attention, dtype=np.float32)
    if attention.ndim == 2:
        attention = attention[None]
    if attention.ndim != 3:
        raise ValueError(f"attention must be (frames, frames) or (heads, frames, frames), got {attention.shape}")
    heads = len(attention)
    columns = math.ceil(math.sqrt(heads))
    rows = math.ceil(heads / columns)
    figure = Figure(figsize=(3.2 * columns + 0.8, 3.0 * rows + 0.6))
    grid = figure.subplots(rows, columns, squeeze=False)
    for index, axes in enumerate(grid.flat):
        if index >= heads:
            axes.set_axis_off()
            continue
        image = axes.imshow(attention[index], aspect="auto", origin="upper", interpolation="nearest", cmap="viridis")
        figure.colorbar(image, ax=axes, fraction=0.046)
        if heads > 1:
            axes.set_title(f"head {index}", fontsize="small")
        axes.set_xlabel("key frame", fontsize="small")
        axes.set_ylabel("query frame", fontsize="small")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, out_png)
