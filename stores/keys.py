"""Content keys: xxh3-128 over a canonical, type-tagged encoding.

A key hashes everything that changes an entry's content and nothing else. The
encoding is sorted and type-tagged so that field order, ``1`` vs ``1.0`` or dict
insertion order never change a key, while any change of value does. There is no
fallback for values it cannot encode: that is an error, never a random key.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from pathlib import Path
from typing import Any

import xxhash

from .errors import AgencerdasError

#: Bump when the meaning of stored arrays changes; it is part of every key.
FORMAT_VERSION = 1

_READ_BLOCK_BYTES = 1 << 22


def _encode(value: Any, out: list[bytes]) -> None:
    """Append a canonical byte encoding of ``value`` to ``out``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if value is None:
        out.append(b"N")
    elif isinstance(value, bool):
        out.append(b"B1" if value else b"B0")
    elif isinstance(value, int):
        text = str(value).encode()
        out.append(b"I%d:" % len(text) + text)
    elif isinstance(value, float):
        if math.isnan(value):
            raise AgencerdasError("cannot build a content key from NaN; fix the config value")
        # Integral floats encode like ints so `n_mels: 80` and `80.0` give one key.
        if value.is_integer():
            _encode(int(value), out)
        else:
            out.append(b"F" + struct.pack(">d", value))
    elif isinstance(value, str):
        text = value.encode("utf-8")
        out.append(b"S%d:" % len(text) + text)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        out.append(b"Y%d:" % len(data) + data)
    elif isinstance(value, (list, tuple)):
        out.append(b"L%d:" % len(value))
        for item in value:
            _encode(item, out)
    elif isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise AgencerdasError(f"cannot build a content key: mapping keys must be strings, got {list(value)!r}")
        out.append(b"D%d:" % len(value))
        for key in sorted(value):
            _encode(key, out)
            _encode(value[key], out)
    else:
        raise AgencerdasError(
            f"cannot build a content key from a value of type {type(value).__name__}; "
            "use numbers, strings, lists, dicts or dataclasses of those"
        )


def canonical_bytes(value: Any) -> bytes:
    """The canonical encoding that :func:`content_key` hashes (exposed for tests and debugging)."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def content_key(*parts: Any) -> str:
    """xxh3-128 hex digest (32 characters) of the canonical encoding of ``parts`` and the format version."""
    return xxhash.xxh3_128_hexdigest(canonical_bytes(["agencerdas", FORMAT_VERSION, list(parts)]))


def hash_file(path: Path) -> str:
    """xxh3-128 hex digest of a file's bytes, read in 4 MiB blocks (memory independent of size)."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        while block := handle.read(_READ_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def feature_key(audio_hash: str, feature_config: Any, region: dict | None = None) -> str:
    """Key of a features entry: audio bytes (by their hash) plus the canonical feature config, and for a
    region of the file (``{"offset_s", "duration_s"}``: one long file described as several recordings) that
    region. A whole file (``region`` None) keeps the key it always had, whichever way it was found."""
    if region is None:
        return content_key("features", audio_hash, feature_config)
    return content_key("features", audio_hash, feature_config, region)


#: What a labels entry holds, beyond FORMAT_VERSION. 2: the reference turns (attrs ``turns``), so
#: validation scores against the annotation itself, not against the 10 ms frame labels. 3: one column
#: per annotated speaker (2 kept the first ``max_speakers`` = 4), so a store written before rebuilds
#: its labels, and only its labels, on the next features run.
LABELS_VERSION = 3


def label_key(features_key: str, annotation: Any, label_config: Any) -> str:
    """Key of a labels entry: its features key, the recording's canonical annotation, the label config
    and :data:`LABELS_VERSION` (a new version redoes labels only; features are reused)."""
    return content_key("labels", LABELS_VERSION, features_key, annotation, label_config)
