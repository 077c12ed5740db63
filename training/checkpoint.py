"""Checkpoints: written atomically (a crash mid-write never replaces the last good file), read so that
they cannot run code.

A checkpoint is a torch zip archive of tensors and plain values (dict, list, tuple, str, int,
float, bool, None). It is read with ``torch.load(weights_only=True)`` and then checked for the
structure this project writes, naming the file in every error: checkpoints are shared between
colleagues and downloaded from the web, and a pickle can run any code.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import pickle
import random
import re
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agencerdas.stores.errors import AgencerdasError

from .config import MAX_DATA_BUDGET, TrainConfig

#: Bump when the checkpoint layout changes incompatibly. 2: RNG states as tensors and plain values (1 held
#: a NumPy array and every visible GPU's CUDA state).
CHECKPOINT_VERSION = 2


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus the format version) to ``path`` via a temporary file and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save({"version": CHECKPOINT_VERSION, **payload}, handle)
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the rename, or a power cut could leave an empty last.pt
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _remove_stale_temporaries(path)


#: A checkpoint's temporary file unchanged this long belongs to a writer that was killed.
STALE_TMP_S = 600.0


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files of ``path`` left by killed writers (each a whole checkpoint) would pile up
    with every crash; remove those no writer has touched for :data:`STALE_TMP_S`."""
    now = time.time()
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            if now - stale.stat().st_mtime > STALE_TMP_S:
                stale.unlink()


#: What checkpoints of version 1 hold beyond tensors and plain values: NumPy's RNG state, a uint32 array,
#: pickled through these names (the reconstructor under its NumPy 1 and 2 spellings). Nothing else is allowed.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_V1_GLOBALS = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), _RECONSTRUCT,
               (_RECONSTRUCT, "numpy.core.multiarray._reconstruct"),
               (_RECONSTRUCT, "numpy._core.multiarray._reconstruct")]

#: Top-level entries of every checkpoint, with their types; a resume needs the others too.
_REQUIRED = {"version": int, "config": dict, "feature_config": dict, "model": dict, "normalizer": dict}
_FOR_RESUME = {"optimizer": dict, "scheduler": dict, "scaler": dict, "epoch": int, "batch_in_epoch": int, "step": int,
               "best": (int, float), "rng": dict}


def load_checkpoint(path: Path, for_resume: bool = False) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`, read so that it cannot run code.

    Only tensors and plain values are unpickled (``weights_only=True``); a file that holds anything
    else, a legacy (non-zip) torch file, or one without the structure this project writes (the
    entries, their types, a valid config) is refused with an AgencerdasError naming it.
    ``for_resume`` also requires the optimizer, scheduler, scaler, position and RNG entries.
    """
    path = Path(path)
    if not path.is_file():
        what = ("is a directory" if path.is_dir() else "does not exist" if not path.exists()
                else "is not a regular file (a pipe, FIFO or device: a checkpoint is read with seeks)")
        raise AgencerdasError(f"checkpoint {path} {what}; give runs/NAME/best.pt or last.pt")
    if not zipfile.is_zipfile(path):
        raise AgencerdasError(f"{path}: not a torch zip checkpoint (a legacy-format torch file, or not a checkpoint "
                              "at all); agencerdas writes zip checkpoints and refuses the legacy format, whose reader "
                              "can run code")
    try:
        with torch.serialization.safe_globals(_V1_GLOBALS):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)|got <class '([^']+)'>", str(exc))
        raise AgencerdasError(
            f"{path}: refused, it holds {next(filter(None, found.groups())) if found else 'objects'} besides tensors and plain values, "
            "and loading that could run code; agencerdas checkpoints never do, so this file was not written by "
            "agencerdas (or was altered)") from None
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise AgencerdasError(f"{path}: not a readable agencerdas checkpoint ({type(exc).__name__}: {exc})") from None
    _check_structure(path, payload, for_resume)
    return payload


def _check_structure(path: Path, payload: Any, for_resume: bool) -> None:
    """Raise AgencerdasError naming ``path`` unless ``payload`` has the entries and types this project writes."""
    if not isinstance(payload, dict) or "version" not in payload or "config" not in payload:
        raise AgencerdasError(f"{path}: not an agencerdas checkpoint (no version and config entries)")
    if isinstance(payload["version"], int) and payload["version"] > CHECKPOINT_VERSION:
        raise AgencerdasError(
            f"{path}: checkpoint version {payload['version']!r} is newer than this agencerdas supports "
            f"({CHECKPOINT_VERSION}); upgrade agencerdas"
        )
    required = {**_REQUIRED, **(_FOR_RESUME if for_resume else {})}
    problems = [f"no {name!r} entry" if name not in payload else
                f"{name!r} is {type(payload[name]).__name__}, not {_type_name(kind)}"
                for name, kind in required.items()
                if name not in payload or not isinstance(payload[name], kind) or isinstance(payload[name], bool)]
    if not problems:
        problems = _content_problems(payload)
    if problems:
        raise AgencerdasError(f"{path}: not a usable agencerdas checkpoint: {'; '.join(problems)}")


def _content_problems(payload: dict) -> list[str]:
    """What is wrong inside the config, feature config, weights and normaliser of a checkpoint."""
    config = payload["config"]
    budget = config.get("data_budget")
    if isinstance(budget, float) and MAX_DATA_BUDGET < budget <= 1.0:
        config["data_budget"] = MAX_DATA_BUDGET  # saved before the cap; only memory use depends on it
    try:
        TrainConfig.from_dict(config)
    except AgencerdasError as exc:
        return [f"its config: {exc}"]
    features = payload["feature_config"]
    problems = [f"feature_config {name} must be a positive int, got {features.get(name)!r}"
                for name in ("n_mels", "hop_length", "sample_rate")
                if not isinstance(features.get(name), int) or isinstance(features.get(name), bool) or features[name] < 1]
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload["model"].items()):
        problems.append("'model' must map parameter names to tensors")
    norm, n_mels = payload["normalizer"], features.get("n_mels")
    for name in ("mean", "std"):
        values = norm.get(name)
        if not (isinstance(values, list) and len(values) == n_mels
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)):
            problems.append(f"normalizer {name} must be a list of {n_mels} finite numbers")
    if not problems and min(norm["std"]) <= 0:
        problems.append("normalizer std must be positive")
    return problems


def _type_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def finite_weights(state: dict[str, torch.Tensor]) -> bool:
    """Whether every floating-point tensor of a state dict is finite (one host sync for all of them)."""
    checks = [torch.isfinite(t).all() for t in state.values() if t.is_floating_point()]
    return bool(torch.stack(checks).all()) if checks else True


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """``module.load_state_dict(state)`` with a message naming ``path`` when the weights do not fit the
    model its config describes, or are not finite."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:  # missing/unexpected keys, shape mismatches
        raise AgencerdasError(f"{path}: the weights do not fit the model its config describes ({exc})") from None
    if not finite_weights(state):
        raise AgencerdasError(f"{path}: holds non-finite (NaN or inf) weights; the run that wrote it diverged, "
                              "use another checkpoint")


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states (this process's CUDA device too), for an exact resume; plain
    values and tensors only, so the checkpoint holding them loads with ``weights_only=True``."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position,
                                                    has_gauss, gauss], "torch": torch.get_rng_state()}
    if torch.cuda.is_available():  # one device per process: a rank restores its own, whatever the machine has
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state` (also the version 1 form: a NumPy array, and every device's CUDA state)."""
    random.setstate(state["python"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else keys
    np.random.set_state((kind, np.asarray(keys, np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, (list, tuple)):  # version 1 saved every visible device's state
            index = torch.cuda.current_device()
            if index < len(cuda):
                torch.cuda.set_rng_state(cuda[index])
        else:
            torch.cuda.set_rng_state(cuda)
