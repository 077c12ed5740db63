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
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from stores.segments import Segment
from stores.errors import AgencerdasError

METRICS_FILE = "metrics.jsonl"
_DPI = 100

#: Model output k is drawn in ``_OUTPUT_COLOURS[k % 9]`` in every panel of a timeline: matplotlib's
#: tab10 cycle without its grey (C7), which would read as a reference speaker.
_OUTPUT_COLOURS = tuple(f"C{index}" for index in range(10) if index != 7)
#: Reference speakers are not model outputs (the plot does not know which output each was mapped
#: to by the DER), so they get greys of their own, alternating between rows.
_REFERENCE_COLOURS = ("0.3", "0.6")


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


def _draw_turns(axes: Axes, segments: list[Segment], rows: list[tuple[str, str]], label: str) -> None:
    """One horizontal row per (speaker, colour) of ``rows``, top to bottom, so overlapped speech shows
    as stacked bars; each row's bars are one collection labelled with the speaker."""
    for row, (speaker, colour) in enumerate(rows):
        bars = [(seg.start, seg.duration) for seg in segments if seg.speaker == speaker]
        axes.broken_barh(bars, (row - 0.4, 0.8), facecolors=colour, label=speaker)
    axes.set_yticks(range(len(rows)), [speaker for speaker, _ in rows], fontsize="small")
    axes.set_ylim(-0.6, max(len(rows), 1) - 0.4)
    axes.invert_yaxis()
    axes.set_ylabel(label)
    axes.grid(axis="x", alpha=0.3)


def _output_rows(hypothesis: list[Segment], n_outputs: int) -> list[tuple[str, str]]:
    """(name, colour) of each model output in output order, named as
    :func:`scoring.binarize.activity_to_segments` names them, then of any other hypothesis speaker."""
    names = [f"spk{index}" for index in range(n_outputs)]
    names += sorted({seg.speaker for seg in hypothesis} - set(names))
    return [(name, _OUTPUT_COLOURS[index % len(_OUTPUT_COLOURS)]) for index, name in enumerate(names)]


def timeline_figure(
    reference: list[Segment],
    hypothesis: list[Segment],
    posteriors: np.ndarray | None,
    frame_shift_s: float,
    title: str,
) -> Figure:
    """The figure :func:`plot_timeline` writes (see there)."""
    n_outputs = 0 if posteriors is None else np.asarray(posteriors).shape[1]
    outputs = _output_rows(hypothesis, n_outputs)
    speakers = sorted({seg.speaker for seg in reference})
    panels = 3 if posteriors is not None else 2
    figure = Figure(figsize=(12, 2.0 * panels + 0.6))
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    _draw_turns(axes[0], reference, [(speaker, _REFERENCE_COLOURS[row % len(_REFERENCE_COLOURS)])
                                     for row, speaker in enumerate(speakers)], "reference")
    # Every output gets its row, a silent one too, so hypothesis row k is posterior curve k.
    _draw_turns(axes[1], hypothesis, outputs, "hypothesis")
    end = max((seg.end for seg in [*reference, *hypothesis]), default=0.0)
    if posteriors is not None:
        posteriors = np.asarray(posteriors)
        times = np.arange(len(posteriors)) * frame_shift_s
        for index, (name, colour) in enumerate(outputs[:n_outputs]):
            axes[2].plot(times, posteriors[:, index], color=colour, linewidth=0.8, label=name)
        axes[2].set_ylim(-0.05, 1.05)
        axes[2].set_ylabel("posterior")
        axes[2].grid(alpha=0.3)
        if posteriors.shape[1]:
            axes[2].legend(fontsize="small", loc="upper right", ncol=posteriors.shape[1])
        end = max(end, len(posteriors) * frame_shift_s)
    axes[0].set_xlim(0.0, end if end > 0 else 1.0)
    axes[-1].set_xlabel("time (s)")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_timeline(
    reference: list[Segment],
    hypothesis: list[Segment],
    posteriors: np.ndarray | None,
    frame_shift_s: float,
    out_png: Path,
    title: str,
) -> Path:
    """Reference and hypothesis speaker timelines, with the model's posteriors beneath.

    Model output k has one colour in the hypothesis and posterior panels (its row and its
    curve); reference speakers are drawn in greys, one row each.

    Args:
        reference: reference turns (seconds).
        hypothesis: system turns (seconds); model output k is speaker ``spk{k}``.
        posteriors: (n_frames, S) per-speaker probabilities, or None to omit the panel.
        frame_shift_s: seconds per posterior frame (frame t is drawn at its start time).
        out_png: where to write the figure (parent directories created).
        title: figure title, e.g. the recording id and its DER.

    Returns:
        ``out_png``.
    """
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
