"""Running one benchmark step in a fresh Python interpreter.

A cold process is what a user's command gets: no warmed-up librosa/numba, no
reused worker pool, no inherited caches, and a peak RSS of its own. The step is
named ``module:function``; its keyword arguments and its (dict) result travel
as JSON files, so only plain values cross the boundary.

Run as ``python -m agencerdas.bench.isolated MODULE:FUNCTION ARGS.json RESULT.json``.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from agencerdas.stores.errors import AgencerdasError

from .measure import peak_rss_mb

#: Lines of a failed step's stderr quoted in the error.
_STDERR_TAIL_LINES = 30


def run_isolated(target: str, env: dict[str, str] | None = None, timeout_s: float | None = None,
                 **kwargs: Any) -> dict[str, Any]:
    """``target(**kwargs)`` run in a new interpreter; its result plus ``process``: peak RSS (MiB)
    and CPU seconds of the process and of its reaped children (e.g. worker pools).

    ``env`` adds environment variables for that process (e.g. ``AGENCERDAS_CACHE_DIR``).
    Raises AgencerdasError with the tail of the step's stderr when it fails.
    """
    with tempfile.TemporaryDirectory(prefix="agencerdas-bench-") as tmp:
        args_path, result_path = Path(tmp) / "args.json", Path(tmp) / "result.json"
        args_path.write_text(json.dumps(kwargs, default=str))
        proc = subprocess.run(
            [sys.executable, "-m", __name__, target, str(args_path), str(result_path)],
            env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout_s,
        )
        if proc.returncode != 0 or not result_path.exists():
            tail = "\n".join(proc.stderr.strip().splitlines()[-_STDERR_TAIL_LINES:])
            raise AgencerdasError(f"benchmark step {target} failed (exit {proc.returncode}):\n{tail}")
        return json.loads(result_path.read_text())


def main(argv: list[str]) -> int:
    """Entry point of the child process: call the step, add its peak RSS, write the result."""
    target, args_path, result_path = argv
    module_name, _, function_name = target.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    result = function(**json.loads(Path(args_path).read_text()))
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    result["process"] = {"peak_rss_mb": peak_rss_mb(), "children_peak_rss_mb": peak_rss_mb(children=True),
                         "cpu_s": own.ru_utime + own.ru_stime, "children_cpu_s": children.ru_utime + children.ru_stime}
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
