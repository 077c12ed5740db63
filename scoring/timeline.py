"""The timeline figure: reference and hypothesis speaker turns of one recording, with the model's
per-speaker posteriors beneath, on matplotlib's Agg canvas (no ``pyplot``, no display). Drawn by
``evaluate`` (as PNG files) and by training (into TensorBoard).

Times are seconds; frame ``t`` of the posteriors is drawn at ``t * frame_shift_s``.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from agencerdas.stores.segments import Segment

#: Model output k is drawn in ``_OUTPUT_COLOURS[k % 9]`` in every panel of a timeline: matplotlib's
#: tab10 cycle without its grey (C7), which would read as a reference speaker.
_OUTPUT_COLOURS = tuple(f"C{index}" for index in range(10) if index != 7)
#: Reference speakers are not model outputs (the plot does not know which output each was mapped
#: to by the DER), so they get greys of their own, alternating between rows.
_REFERENCE_COLOURS = ("0.3", "0.6")


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
    """Reference and hypothesis speaker timelines, with the model's posteriors beneath.

    Model output k has one colour in the hypothesis and posterior panels (its row and its
    curve); reference speakers are drawn in greys, one row each.

    Args:
        reference: reference turns (seconds).
        hypothesis: system turns (seconds); model output k is speaker ``spk{k}``.
        posteriors: (n_frames, S) per-speaker probabilities, or None to omit the panel.
        frame_shift_s: seconds per posterior frame (frame t is drawn at its start time).
        title: figure title, e.g. the recording id and its DER.
    """
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
