"""Training from Python, with the presets, overrides and checks of ``agencerdas train``."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agencerdas.stores.errors import AgencerdasError

from .rundir import check_run_dir

#: What ``overrides`` may be: "EPOCHS=3 LR=5e-4" (split as a shell would), {"EPOCHS": 3}, or an iterable of
#: "KEY=VALUE" strings and (KEY, VALUE) pairs.
Overrides = str | Mapping[str, Any] | Iterable[str | tuple[str, Any]] | None


def train(store: str, view: str = "default", out: str | Path | None = None, preset: str = "optimized",
          overrides: Overrides = None, resume: bool = False, overwrite: bool = False,
          progress: bool = True, storage_options: dict | None = None) -> list[dict]:
    """Train (or with ``resume`` continue) the run ``out`` (default ``runs/PRESET``) on the view ``view`` of
    ``store``, as ``agencerdas train --store STORE --view VIEW --preset PRESET --out OUT KEY=VALUE ...`` does.

    ``overrides`` are the CLI's ``KEY=VALUE`` settings, as a list (``["EPOCHS=3", "LR=5e-4"]``), one string
    (``"EPOCHS=3 LR=5e-4"``), a dict (``{"EPOCHS": 3, "INIT_FROM": "runs/x/best.pt"}``) or (KEY, VALUE) pairs;
    an unknown name raises AgencerdasError listing the valid ones. A run already in ``out`` is
    continued only with ``resume`` and replaced only with ``overwrite``. Returns the per-epoch
    records written to ``out/metrics.jsonl``.
    """
    from .config import resolve
    from .loop import train as fit  # torch: loaded on the first call, not with the package

    cfg = resolve(preset, override_list(overrides))
    if out is None:
        out = f"runs/{preset}"
    if not isinstance(out, (str, os.PathLike)):
        raise AgencerdasError(f"train(out=...) must be a directory path (str or Path), got {type(out).__name__} {out!r}")
    if int(os.environ.get("RANK", 0)) == 0:  # the writer; under torchrun a failed rank 0 stops every rank
        check_run_dir(Path(out), resume, overwrite)
    return fit(cfg, store, view, Path(out), resume=resume, storage_options=storage_options, progress=progress)


def override_list(overrides: Overrides) -> list[str]:
    """``overrides`` in any form :func:`train` takes, as the CLI's ``KEY=VALUE`` strings."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        try:
            return shlex.split(overrides)
        except ValueError as exc:  # an unclosed quote
            raise AgencerdasError(f"train(overrides={overrides!r}): {exc}; give KEY=VALUE settings") from None
    if isinstance(overrides, Mapping):
        return [f"{key}={value}" for key, value in overrides.items()]
    if not isinstance(overrides, Iterable) or isinstance(overrides, bytes):
        raise AgencerdasError(f"train(overrides=...) must be KEY=VALUE strings, a dict or (KEY, VALUE) pairs, got "
                              f"{type(overrides).__name__} {overrides!r}")
    items = []
    for item in overrides:
        if isinstance(item, str):
            items.append(item)
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            items.append(f"{item[0]}={item[1]}")
        else:
            raise AgencerdasError(f"train(overrides=...): {item!r} is neither a 'KEY=VALUE' string nor a (KEY, VALUE) "
                                  "pair")
    return items
