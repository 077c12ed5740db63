"""Training from Python, with the presets, overrides and checks of ``agencerdas train``."""

from __future__ import annotations

import os
from pathlib import Path

from .outputs import run_dir


def train(store: str, view: str = "default", out: str | Path = "runs/optimized", preset: str = "optimized",
          overrides: list[str] | None = None, resume: bool = False, overwrite: bool = False,
          progress: bool = True, storage_options: dict | None = None) -> list[dict]:
    """Train (or with ``resume`` continue) the run ``out`` on the view ``view`` of ``store``, as
    ``agencerdas train --store STORE --view VIEW --preset PRESET --out OUT KEY=VALUE ...`` does.

    ``overrides`` are the CLI's ``KEY=VALUE`` strings (``["EPOCHS=3", "LR=5e-4", "INIT_FROM=runs/x/best.pt"]``);
    an unknown name raises AgencerdasError listing the valid ones. A run already in ``out`` is
    continued only with ``resume`` and replaced only with ``overwrite``. Returns the per-epoch
    records written to ``out/metrics.jsonl``.
    """
    from agencerdas.training.config import resolve
    from agencerdas.training.loop import train as fit

    cfg = resolve(preset, list(overrides or []))
    if int(os.environ.get("RANK", 0)) == 0:  # the writer; under torchrun a failed rank 0 stops every rank
        run_dir(Path(out), resume, overwrite)
    return fit(cfg, store, view, Path(out), resume=resume, storage_options=storage_options, progress=progress)
