"""Content keys: stable, canonical, sensitive to every real change, and never a fallback."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

import agencerdas.stores.keys as keys_module
from agencerdas.pipeline.features import FeatureConfig
from agencerdas.pipeline.labels import LabelConfig, canonical_annotation
from agencerdas.stores.segments import Segment
from agencerdas.stores import content_key, feature_key, hash_file, label_key
from agencerdas.stores.errors import AgencerdasError
from agencerdas.stores.keys import canonical_bytes

ROOT = Path(__file__).resolve().parents[2]
CONFIG = {"sample_rate": 16000, "n_mels": 80, "fmin": 20.0, "fmax": 7600.0, "dtype": "float16"}


def write_audio(path: Path, payload: bytes) -> Path:
    path.write_bytes(payload)
    return path


def test_canonical_encoding_is_pinned():
    # The exact bytes are the on-disk contract of every key: pin them.
    assert canonical_bytes({"b": [1, 2.5], "a": "x"}) == (
        b"D2:" + b"S1:a" + b"S1:x" + b"S1:b" + b"L2:" + b"I1:1" + b"F\x40\x04\x00\x00\x00\x00\x00\x00"
    )
    assert canonical_bytes([None, True, False, b"\x00"]) == b"L4:NB1B0Y1:\x00"


def test_same_bytes_and_config_give_the_same_key_in_another_process(tmp_path):
    audio = write_audio(tmp_path / "a.wav", bytes(range(256)) * 100)
    here = feature_key(hash_file(audio), CONFIG)
    code = (
        "import sys; from stores import feature_key, hash_file; "
        f"print(feature_key(hash_file(sys.argv[1]), {CONFIG!r}))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    there = subprocess.run(
        [sys.executable, "-c", code, str(audio)], capture_output=True, text=True, check=True, env=env, cwd=ROOT
    ).stdout.strip()
    assert there == here
    assert len(here) == 32 and all(c in "0123456789abcdef" for c in here)


def test_field_order_does_not_change_the_key():
    reordered = dict(reversed(list(CONFIG.items())))
    assert list(reordered) != list(CONFIG)
    assert feature_key("ab" * 16, reordered) == feature_key("ab" * 16, CONFIG)
    nested = {"outer": {"x": 1, "y": [1, {"p": 1, "q": 2}]}}
    nested_reordered = {"outer": {"y": [1, {"q": 2, "p": 1}], "x": 1}}
    assert content_key(nested) == content_key(nested_reordered)


def test_integral_float_and_int_give_one_key():
    assert content_key({"n_mels": 80}) == content_key({"n_mels": 80.0})
    assert content_key({"n_mels": 80}) != content_key({"n_mels": 80.5})
    assert content_key({"n_mels": 80}) != content_key({"n_mels": "80"})
    assert content_key(True) != content_key(1)


def test_dataclass_and_equivalent_dict_give_one_key():
    config = FeatureConfig()
    assert feature_key("0" * 32, config) == feature_key("0" * 32, dataclasses.asdict(config))
    assert feature_key("0" * 32, config) == feature_key("0" * 32, config.to_dict())
    assert content_key(LabelConfig()) == content_key({})


def test_one_audio_byte_changes_the_key(tmp_path):
    payload = bytearray(os.urandom(10_000))
    a = write_audio(tmp_path / "a.wav", bytes(payload))
    payload[5000] ^= 1
    b = write_audio(tmp_path / "b.wav", bytes(payload))
    assert feature_key(hash_file(a), CONFIG) != feature_key(hash_file(b), CONFIG)


def test_one_config_field_changes_the_key():
    base = feature_key("0" * 32, CONFIG)
    for field, value in [("n_mels", 81), ("fmin", 20.5), ("dtype", "float32"), ("sample_rate", 8000)]:
        assert feature_key("0" * 32, {**CONFIG, field: value}) != base, field
    assert feature_key("0" * 32, {**CONFIG, "extra": None}) != base


def test_label_key_follows_features_annotation_and_config():
    turns = [Segment(0.5, 1.0, "alice"), Segment(1.2, 0.4, "bob")]
    annotation = canonical_annotation(turns, None)
    base = label_key("1" * 32, annotation, {"max_speakers": 4})
    assert label_key("1" * 32, canonical_annotation(list(reversed(turns)), None), {"max_speakers": 4}) == base
    assert label_key("2" * 32, annotation, {"max_speakers": 4}) != base
    assert label_key("1" * 32, annotation, {"max_speakers": 3}) != base
    edited = canonical_annotation([Segment(0.5, 1.001, "alice"), turns[1]], None)
    assert label_key("1" * 32, edited, {"max_speakers": 4}) != base


def test_format_version_is_part_of_the_key(monkeypatch):
    before = content_key("features", "0" * 32, CONFIG)
    monkeypatch.setattr(keys_module, "FORMAT_VERSION", keys_module.FORMAT_VERSION + 1)
    assert content_key("features", "0" * 32, CONFIG) != before


@pytest.mark.parametrize("value", [{1, 2}, object(), frozenset(), {1: "int key"}, Path("/x")])
def test_unencodable_values_raise_instead_of_falling_back(value):
    with pytest.raises(AgencerdasError, match="cannot build a content key"):
        content_key({"field": value})


def test_nan_raises():
    with pytest.raises(AgencerdasError, match="NaN"):
        content_key({"fmin": float("nan")})
    with pytest.raises(AgencerdasError, match="NaN"):
        feature_key("0" * 32, FeatureConfig(log_floor=float("nan")))
