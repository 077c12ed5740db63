"""Figures are written as non-empty PNG files without a display."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agencerdas.stores.segments import Segment
from agencerdas.stores.errors import AgencerdasError
from agencerdas.inference.plots import plot_attention, plot_losses, plot_timeline

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_MAGIC


def _write_run(run_dir: Path, epochs: int, with_validation: bool) -> Path:
    run_dir.mkdir(parents=True)
    lines = []
    for epoch in range(epochs):
        for step in range(3):
            lines.append({"kind": "step", "step": epoch * 3 + step, "epoch": epoch, "loss": 1.0 / (epoch + step + 1)})
        lines.append(
            {
                "kind": "epoch",
                "epoch": epoch,
                "step": epoch * 3 + 2,
                "train_loss": 1.0 / (epoch + 1),
                "val_loss": 1.2 / (epoch + 1) if with_validation else None,
                "val_der": 0.4 / (epoch + 1) if with_validation else None,
            }
        )
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return run_dir


def test_plot_losses_for_several_runs(tmp_path):
    runs = [
        _write_run(tmp_path / "runs" / "baseline", epochs=4, with_validation=True),
        _write_run(tmp_path / "runs" / "no_val", epochs=2, with_validation=False),
    ]
    _assert_png(plot_losses(runs, tmp_path / "out" / "losses.png"))
    _assert_png(plot_losses(runs[1:], tmp_path / "out" / "train_only.png"))


def test_plot_losses_reports_unusable_metrics(tmp_path):
    with pytest.raises(AgencerdasError, match="metrics.jsonl"):
        plot_losses([tmp_path / "missing"], tmp_path / "x.png")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.jsonl").write_text('{"kind": "step", "step": 0, "epoch": 0, "loss": 1.0}\n{oops\n')
    with pytest.raises(AgencerdasError, match=r"metrics.jsonl:2"):
        plot_losses([bad], tmp_path / "x.png")
    (bad / "metrics.jsonl").write_text('{"kind": "step", "step": 0, "epoch": 0, "loss": 1.0}\n')
    with pytest.raises(AgencerdasError, match="no epoch records"):
        plot_losses([bad], tmp_path / "x.png")


def test_plot_timeline_with_and_without_posteriors(tmp_path):
    reference = [Segment(0.0, 4.0, "alice"), Segment(3.0, 2.5, "bob"), Segment(7.0, 2.0, "alice")]
    hypothesis = [Segment(0.2, 3.5, "spk0"), Segment(3.1, 2.0, "spk1")]
    posteriors = np.random.default_rng(0).uniform(0, 1, (100, 2)).astype(np.float32)
    _assert_png(plot_timeline(reference, hypothesis, posteriors, 0.1, tmp_path / "t.png", "rec1 DER 12.3%"))
    _assert_png(plot_timeline(reference, [], None, 0.1, tmp_path / "t2.png", "no speech found"))


def test_plot_attention_single_map_and_heads(tmp_path):
    rng = np.random.default_rng(0)
    _assert_png(plot_attention(rng.uniform(size=(40, 40)), tmp_path / "one.png", "layer 0"))
    _assert_png(plot_attention(rng.uniform(size=(3, 40, 40)), tmp_path / "heads.png"))
    with pytest.raises(ValueError, match="attention"):
        plot_attention(np.zeros(5), tmp_path / "bad.png")


def test_timeline_draws_each_model_output_in_one_colour_in_every_panel(tmp_path):
    from matplotlib.colors import to_rgba

    from agencerdas.scoring.timeline import timeline_figure

    reference = [Segment(0.0, 4.0, "alice"), Segment(3.0, 2.5, "bob"), Segment(6.0, 3.0, "carol")]
    # Output 0 never speaks: output 1's turns must still be drawn in output 1's colour, not the first one.
    hypothesis = [Segment(0.2, 3.5, "spk1"), Segment(3.1, 2.0, "spk2"), Segment(6.0, 2.5, "spk1")]
    posteriors = np.random.default_rng(0).uniform(0, 1, (100, 3)).astype(np.float32)
    figure = timeline_figure(reference, hypothesis, posteriors, 0.1, "rec1")
    reference_axes, hypothesis_axes, posterior_axes = figure.axes

    curves = {line.get_label(): to_rgba(line.get_color()) for line in posterior_axes.get_lines()}
    rows = {bars.get_label(): to_rgba(bars.get_facecolor()[0]) for bars in hypothesis_axes.collections}
    assert list(curves) == ["spk0", "spk1", "spk2"]
    assert rows == curves
    assert {bars.get_label() for bars in hypothesis_axes.collections if bars.get_paths()} == {"spk1", "spk2"}
    # Row k is output k, a silent output too.
    assert [tick.get_text() for tick in hypothesis_axes.get_yticklabels()] == ["spk0", "spk1", "spk2"]
    assert len(set(curves.values())) == 3

    speakers = {bars.get_label(): to_rgba(bars.get_facecolor()[0]) for bars in reference_axes.collections}
    assert sorted(speakers) == ["alice", "bob", "carol"]
    assert not set(speakers.values()) & set(curves.values())  # no reference speaker looks like a model output
    _assert_png(plot_timeline(reference, hypothesis, posteriors, 0.1, tmp_path / "timeline.png", "rec1"))
