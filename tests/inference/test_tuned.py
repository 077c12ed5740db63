"""tuned.json is read through one function that checks every field it hands on and names the file and the
field of a value it refuses, before any inference runs on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agencerdas.inference.tuned import MAX_MEDIAN_S, read_tuned
from agencerdas.scoring.settings import PipelineSettings
from agencerdas.stores.errors import AgencerdasError

SHIFT_S = 0.15  # seconds per model frame of the optimized preset (10 ms base frames, 15x)


def _record(**changes) -> dict:
    """A file as ``evaluate --tune`` writes it, bound to a checkpoint, with ``changes``."""
    settings = PipelineSettings(window=200, overlap=0.5, threshold=0.4, fill_speech=True, median_frames=11,
                                max_overlap=None, clustering=True, cluster_threshold=0.7)
    return {**settings.tuned_record(), "der": 0.21, "checkpoint": "best.pt", "checkpoint_xxh3": "ab12",
            "tuned_on_scored": False, "data": {"view": "default", "split": "validation", "audio_dir": None,
                                               "recordings": 3, "features": ["k1", "k2", "k3"]}, **changes}


def _write(tmp_path: Path, content) -> Path:
    path = tmp_path / "tuned.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_a_file_evaluate_writes_reads_back_whole(tmp_path):
    record = _record()
    assert read_tuned(_write(tmp_path, record), SHIFT_S) == record


def test_an_older_file_that_names_no_checkpoint_may_lack_fields(tmp_path):
    # written before tuned settings named their checkpoint: it is only ever ignored, so it need not be complete
    assert read_tuned(_write(tmp_path, {"threshold": 0.5}), SHIFT_S) == {"threshold": 0.5}


@pytest.mark.parametrize("content, says", [
    ("{threshold: 0.5", "not JSON"),
    ("", "not JSON"),
    ("[0.5, 11]", "holds a JSON list, not an object"),
    ('"0.5"', "holds a JSON str"),
    (_record(threshold="0.5"), "field 'threshold' is \"0.5\", expected a number in [0, 1]"),
    (_record(threshold=float("nan")), "field 'threshold' is NaN"),
    (_record(threshold=1.5), "field 'threshold' is 1.5"),
    (_record(threshold=True), "field 'threshold' is true"),
    (_record(median_frames=3.5), "field 'median_frames' is 3.5, expected an odd integer"),
    (_record(median_frames=-3), "field 'median_frames' is -3"),
    (_record(median_frames=4), "field 'median_frames' is 4"),
    (_record(median_frames=100000001), "field 'median_frames' is 100000001"),
    (_record(cluster_threshold=float("nan")), "field 'cluster_threshold' is NaN"),
    (_record(cluster_threshold=-0.1), "field 'cluster_threshold'"),
    (_record(fill_speech="no"), "field 'fill_speech' is \"no\", expected true or false"),
    (_record(clustering=1), "field 'clustering' is 1"),
    (_record(overlap=1.0), "field 'overlap'"),
    (_record(window=0), "field 'window'"),
    (_record(count="vote"), "field 'count'"),
    (_record(vad="webrtc"), "field 'vad'"),
    (_record(der="low"), "field 'der'"),
    (_record(data=["k1"]), "field 'data'"),
    ({k: v for k, v in _record().items() if k != "threshold"}, "lacks the field(s) threshold"),
    ({k: v for k, v in _record().items() if k != "cluster_threshold"}, "lacks the field(s) cluster_threshold"),
])
def test_a_broken_file_is_refused_naming_it_and_the_field(tmp_path, content, says):
    path = _write(tmp_path, content)
    with pytest.raises(AgencerdasError) as info:
        read_tuned(path, SHIFT_S)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and says in message, message
    assert "evaluate --model CHECKPOINT --tune" in message  # what to do


def test_the_widest_median_is_ten_seconds_of_the_model_s_frames(tmp_path):
    widest = int(MAX_MEDIAN_S / SHIFT_S)
    widest -= 1 - widest % 2  # the largest odd number of frames within it
    assert read_tuned(_write(tmp_path, _record(median_frames=widest)), SHIFT_S)["median_frames"] == widest
    with pytest.raises(AgencerdasError, match=f"from 1 to {widest} frames"):
        read_tuned(_write(tmp_path, _record(median_frames=widest + 2)), SHIFT_S)


def test_an_unreadable_file_is_named(tmp_path):
    path = tmp_path / "tuned.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(AgencerdasError, match=f"{path}: cannot read the tuned settings"):
        read_tuned(path, SHIFT_S)
