"""Run under torchrun by test_ddp.py: train like `agencerdas train`, then save this rank's weights.

Usage: torchrun --standalone --nproc_per_node=N ddp_train.py STORE OUT [--resume] KEY=VALUE...
Writes OUT/rank<R>.pt with the rank's model state_dict, world size and per-epoch records.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from agencerdas.training.config import resolve
from agencerdas.training.inputs import load_data
from agencerdas.training.loop import Trainer
from agencerdas.training.runtime import setup, teardown


def main(store: str, out: str, *arguments: str) -> None:
    cfg = resolve("optimized", [a for a in arguments if a != "--resume"])
    rt = setup(cfg.device, cfg.precision)
    try:
        trainer = Trainer(cfg, load_data(cfg, store, "default", {}), Path(out), rt, resume="--resume" in arguments,
                          progress=False)
        history = trainer.fit()
        Path(out).mkdir(parents=True, exist_ok=True)
        torch.save({"model": trainer.model.state_dict(), "world": rt.world, "history": history},
                   Path(out) / f"rank{rt.rank}.pt")
    finally:
        teardown()


if __name__ == "__main__":
    main(*sys.argv[1:])
