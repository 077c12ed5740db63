"""Benchmark of the feature store, the feature pipeline, the trainer and the pretrained components' cost to
inference: ratios against baselines run in the same invocation, with absolute numbers and the machine described.

>>> from bench import run_bench
>>> result = run_bench(size="small", jobs=2)   # writes bench/results/<date>-<host>-small.{json,md,png}
>>> print(result["table"])

``run_bench`` is imported on first use, so importing this package (for the command
line's argument parser) does not load torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_bench"]


def __getattr__(name: str) -> Any:
    if name == "run_bench":
        from .run import run_bench

        return run_bench
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
