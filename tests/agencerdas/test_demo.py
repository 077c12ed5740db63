"""`make demo`'s closing summary: the trained model's DER on each test set beside the no-model pipeline's."""

from __future__ import annotations

import json
from pathlib import Path

from agencerdas.demo import demo_summary


def _report(path: Path, der: float) -> None:
    path.mkdir(parents=True)
    overall = {"der": der, "missed_rate": der / 2, "false_alarm_rate": 0.0, "confusion_rate": der / 2}
    path.joinpath("report.json").write_text(json.dumps({
        "der": {"overall": overall, "settings": {"collar_s": 0.25, "skip_overlap": False}, "per_recording": {"a": {}}},
        "timing": {"x_real_time": 100.0}, "speaker_count": {"exact": 1}}))


def test_each_test_set_shows_the_trained_model_and_then_the_pipeline_without_one(tmp_path):
    run = tmp_path / "run"
    for folder, der in (("eval", 0.10), ("eval-pretrained", 0.20), ("eval-many", 0.30), ("eval-many-pretrained", 0.40)):
        _report(run / folder, der)
    lines = demo_summary(tmp_path / "data", tmp_path / "store", run).splitlines()
    rows = [line.split()[:3] for line in lines if "%  (missed" in line]
    assert rows == [["test", "DER", "10.00%"], ["no", "model", "20.00%"], ["5-7", "spk", "30.00%"],
                    ["no", "model", "40.00%"]]


def test_a_missing_baseline_report_leaves_its_row_out(tmp_path):
    _report(tmp_path / "run" / "eval", 0.10)
    summary = demo_summary(tmp_path / "data", tmp_path / "store", tmp_path / "run")
    assert "test DER  10.00%" in summary and "no model" not in summary.split("outputs")[0]
