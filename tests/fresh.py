"""Code run in a fresh interpreter, to see which modules it loads (light paths must stay light)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def loaded_by(code: str, packages: tuple[str, ...], timeout: float = 300) -> tuple[list[str], str]:
    """Run ``code`` in a new Python process at the repository root; the modules of ``packages`` (each a
    dotted name, with its submodules) loaded when it ends, sorted, and what ``code`` printed. Fails with
    the child's stderr if ``code`` fails."""
    probe = (f"{code}\nimport json as _json, sys as _sys\n"
             f"print(_json.dumps(sorted(m for m in _sys.modules if any(m == p or m.startswith(p + '.') "
             f"for p in {list(packages)!r}))))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    printed, _, last = done.stdout.rstrip("\n").rpartition("\n")
    return json.loads(last), printed
