"""Reading ``tuned.json``, the settings ``evaluate --tune`` saves beside a checkpoint (its fields are
listed in :mod:`.model`), through one function that checks every field it hands on.

The file is the user's to edit, copy and break, and its values reach the decisions only after all the
inference has run (a median width of 10^8 frames fails deep inside scipy, a string threshold inside
numpy), so it is checked whole when read and an error names the file and the field.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any

from agencerdas.scoring.settings import COUNT_RULES, VAD_CHOICES
from agencerdas.stores.errors import AgencerdasError

#: The widest median filter accepted, in seconds: tuning tries a few frames (TUNE_MEDIANS, at most ~4 s), and a
#: median far wider than a turn erases the turns; the bound also keeps the filter's memory that of the posteriors.
MAX_MEDIAN_S = 10.0

#: Fields of a file that names its checkpoint (``checkpoint_xxh3``): the values a matching file applies, and
#: what evaluate's report says of the recordings they were tuned on.
_REQUIRED = ("threshold", "median_frames", "data")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def read_tuned(path: Path, frame_shift_s: float) -> dict:
    """The settings in ``tuned.json`` at ``path`` for a model of ``frame_shift_s`` seconds per frame.

    Every field present must hold its type and range: ``threshold`` a number in [0, 1], ``median_frames``
    an odd integer from 1 to :data:`MAX_MEDIAN_S` worth of frames, ``cluster_threshold`` a cosine distance in
    [0, 2], ``fill_speech`` and ``clustering`` booleans, the pipeline's structure as
    :class:`~scoring.settings.PipelineSettings` holds it (``window``, ``overlap``, ``max_overlap``,
    ``embeddings``, ``count``, ``vad``), ``der`` a number, ``checkpoint`` and ``checkpoint_xxh3`` strings,
    ``data`` an object describing the recordings it was tuned on. A file that names its checkpoint
    (``checkpoint_xxh3``) must hold every field it would apply (and ``cluster_threshold`` with clustering);
    an older file without one is only ever ignored, so it may lack them.

    Raises AgencerdasError naming ``path`` and the field, and saying to re-tune or remove the file.
    """
    path = Path(path)

    def fail(problem: str) -> AgencerdasError:
        return AgencerdasError(f"{path}: {problem}; fix it, or delete the file and rerun "
                               "`agencerdas evaluate --model CHECKPOINT --tune` to write it again")

    try:
        tuned = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise AgencerdasError(f"{path}: cannot read the tuned settings ({exc})") from None
    except ValueError as exc:  # json.JSONDecodeError; NaN and Infinity are parsed, and checked below
        raise fail(f"not JSON ({exc})") from None
    if not isinstance(tuned, dict):
        raise fail(f"holds a JSON {type(tuned).__name__}, not an object of tuned settings")
    if "checkpoint_xxh3" in tuned:
        missing = [name for name in _REQUIRED if name not in tuned]
        if tuned.get("clustering") is True and "cluster_threshold" not in tuned:
            missing.append("cluster_threshold")
        if missing:
            raise fail(f"lacks the field(s) {', '.join(missing)}")
    for name, check, expected in _checks(frame_shift_s):
        if name in tuned and not check(tuned[name]):
            shown = json.dumps(tuned[name])
            raise fail(f"field {name!r} is {shown if len(shown) <= 60 else shown[:57] + '...'}, expected {expected}")
    return tuned


def _median_cap(frame_shift_s: float) -> int:
    """The largest odd median width, in frames, within :data:`MAX_MEDIAN_S`."""
    frames = max(1, int(MAX_MEDIAN_S / frame_shift_s))
    return frames if frames % 2 else frames - 1


def _data_ok(data: Any) -> bool:
    """The description of the tuning recordings that evaluate's report reads."""
    return (isinstance(data, dict) and isinstance(data.get("features"), list)
            and all(isinstance(key, str) for key in data["features"])
            and isinstance(data.get("view"), str) and isinstance(data.get("split"), str)
            and isinstance(data.get("audio_dir"), (str, type(None))) and _is_int(data.get("recordings")))


def _checks(frame_shift_s: float) -> tuple:
    """(field, predicate, what it must be) of every field read."""
    cap = _median_cap(frame_shift_s)
    return (
        ("threshold", lambda v: _is_number(v) and 0.0 <= v <= 1.0, "a number in [0, 1]"),
        ("median_frames", lambda v: _is_int(v) and 1 <= v <= cap and v % 2 == 1,
         f"an odd integer from 1 to {cap} frames ({MAX_MEDIAN_S:g} s at {frame_shift_s:g} s per frame)"),
        ("cluster_threshold", lambda v: _is_number(v) and 0.0 <= v <= 2.0, "a cosine distance in [0, 2]"),
        ("fill_speech", lambda v: isinstance(v, bool), "true or false"),
        ("clustering", lambda v: isinstance(v, bool), "true or false"),
        ("window", lambda v: _is_int(v) and v >= 1, "a chunk length of at least 1 model frame"),
        ("overlap", lambda v: _is_number(v) and 0.0 <= v < 1.0, "a chunk overlap in [0, 1)"),
        ("max_overlap", lambda v: v is None or (_is_int(v) and v >= 1), "null or a number of speakers >= 1"),
        ("embeddings", lambda v: isinstance(v, str) and len(v) > 0, "an embedding source (head, ge2e, a file)"),
        ("count", lambda v: v in COUNT_RULES, f"one of {', '.join(COUNT_RULES)}"),
        ("vad", lambda v: v in VAD_CHOICES, f"one of {', '.join(VAD_CHOICES)}"),
        ("der", lambda v: v is None or _is_number(v), "the DER measured, a number"),
        ("checkpoint", lambda v: isinstance(v, str), "a file name"),
        ("checkpoint_xxh3", lambda v: isinstance(v, str) and len(v) > 0, "the checkpoint's xxh3 hex digest"),
        ("data", _data_ok, 'an object {"view": str, "split": str, "audio_dir": str or null, "recordings": int, '
                           '"features": [str, ...]}'),
    )
