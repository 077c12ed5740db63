"""Atomic checkpoints: a crash mid-write never replaces the last good file."""

from __future__ import annotations

import contextlib
import glob
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stores.errors import AgencerdasError

#: Bump when the checkpoint layout changes incompatibly.
CHECKPOINT_VERSION = 1


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


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`; clear errors for missing or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise AgencerdasError(f"checkpoint {path} does not exist; give runs/NAME/best.pt or last.pt")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise AgencerdasError(f"{path}: not a readable agencerdas checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or "version" not in payload or "config" not in payload:
        raise AgencerdasError(f"{path}: not an agencerdas checkpoint")
    if not isinstance(payload["version"], int) or payload["version"] > CHECKPOINT_VERSION:
        raise AgencerdasError(
            f"{path}: checkpoint version {payload['version']!r} is newer than this agencerdas supports "
            f"({CHECKPOINT_VERSION}); upgrade agencerdas"
        )
    return payload


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states (CUDA too when present), for an exact resume."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
