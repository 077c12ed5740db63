"""The GPU check's code, run on the CPU at its tiny size: every figure it prints is produced."""

from __future__ import annotations

from agencerdas.bench.gpu_check import PRESETS, run_check, synthetic_store, table
from agencerdas.stores import Store, load_view


def test_the_synthetic_store_is_a_trainable_view(tmp_path):
    url = synthetic_store(tmp_path / "store", recordings=5, min_s=20.0, max_s=25.0)
    store = Store(url, create=False)
    view = load_view(store, "default")
    assert len(view.recordings) == 5 and store.verify().ok
    rec = next(iter(view.recordings.values()))
    attrs = store.attrs("labels", rec.labels)
    assert attrs["turns"] and 2 <= len(attrs["speakers"]) <= 4 and rec.frames >= 2000


def test_the_gpu_check_runs_end_to_end_on_the_cpu(tmp_path):
    result = run_check(tmp_path, recordings=6, steps=3, tiny=True)
    assert set(result["steps"]) == {f"{p}/fp32" for p in PRESETS}
    for row in result["steps"].values():
        assert row["synthetic_steps_per_s"] > 0 and row["resident_steps_per_s"] > 0
        assert 0.0 <= row["data_wait_share"] <= 1.0
    assert all(rate > 0 for rate in result["builder_windows_per_s"].values())
    for run in result["train"].values():
        assert run["data_path"].startswith("on the device") and run["steps"] > 0
    text = table(result)
    assert "train optimized" in text and "resident batch builder alone" in text
