"""Shared helpers of the reliability tests: the CLI in a subprocess, the fork server client,
store snapshots compared key for key and array for array, and a strict NIST RTTM check."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from agencerdas.stores import Store, load_view
from agencerdas.stores.store import COMMIT, KINDS

ROOT = Path(__file__).resolve().parents[2]
AGENCERDAS = [sys.executable, "-m", "agencerdas"]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: this test's stat cache dir (set by the autouse fixture)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def cli(*argv: str, timeout: float = 120, **popen) -> subprocess.CompletedProcess:
    """Run ``agencerdas ARGV`` in a fresh Python process; fails the test on a hang."""
    return subprocess.run([*AGENCERDAS, *argv], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout, **popen)


def cli_popen(*argv: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([*AGENCERDAS, *argv], cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def assert_no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text and "internal error" not in text, text


# ------------------------------------------------------------------ store snapshots


def array_names(store: Store, kind: str, key: str) -> list[str]:
    """Names of an entry's arrays, from its commit manifest."""
    return sorted(json.loads(store.fs.cat_file(f"{store._path(kind, key)}/{COMMIT}"))["arrays"])


def snapshot(store: Store) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """Every committed entry's arrays, by (kind, key)."""
    out = {}
    for kind in KINDS:
        for key in store.keys(kind):
            group = store.open(kind, key)
            out[(kind, key)] = {name: np.asarray(group[name][:]) for name in array_names(store, kind, key)}
    return out


def stable_attrs(store: Store, kind: str, key: str) -> dict:
    """Attributes that must be identical for one content key, whoever wrote it and when."""
    attrs = store.attrs(kind, key)
    for volatile in ("created_at", "versions", "source_path", "recording_id"):
        attrs.pop(volatile, None)
    return attrs


def assert_entries_match(store: Store, reference: Store, ref_arrays: dict) -> int:
    """Every committed entry of ``store`` exists in ``reference`` with equal arrays and attributes."""
    checked = 0
    for kind in KINDS:
        for key in store.keys(kind):
            assert (kind, key) in ref_arrays, f"{kind}/{key} is committed but a clean build has no such key"
            group = store.open(kind, key)
            names = array_names(store, kind, key)
            assert names == sorted(ref_arrays[(kind, key)]), f"{kind}/{key}: arrays {names}"
            for name in names:
                np.testing.assert_array_equal(np.asarray(group[name][:]), ref_arrays[(kind, key)][name],
                                              err_msg=f"{kind}/{key}/{name} differs from a clean build")
            assert stable_attrs(store, kind, key) == stable_attrs(reference, kind, key), f"{kind}/{key} attrs"
            checked += 1
    return checked


def leftover_only(report) -> list[tuple[str, str]]:
    """Problems of a verify report that are NOT crash leftovers (i.e. real corruption)."""
    allowed = ("orphan of an interrupted write", "partial entry without commit marker", "interrupted view write")
    return [(p, r) for p, r in report.problems if not any(r.startswith(a) for a in allowed)]


def view_entries(store: Store, name: str = "default") -> dict[str, tuple[str, str | None]]:
    return {rec: (r.features, r.labels) for rec, r in load_view(store, name).recordings.items()}


# ------------------------------------------------------------------------ RTTM


def assert_valid_rttm(text: str) -> list[list[str]]:
    """Strict NIST RTTM: 10 space-separated fields per SPEAKER line, no whitespace inside a field,
    numeric start >= 0 and duration > 0, <NA> where the format says so. Returns the split lines."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split(" ")
        assert len(fields) == 10, f"line {number}: {len(fields)} fields: {line!r}"
        assert all(f and not any(c.isspace() for c in f) for f in fields), f"line {number}: {line!r}"
        assert fields[0] == "SPEAKER" and fields[2] == "1", line
        assert float(fields[3]) >= 0 and float(fields[4]) > 0, line
        assert fields[5] == fields[6] == fields[8] == fields[9] == "<NA>", line
        rows.append(fields)
    return rows


# ------------------------------------------------------------------ fork server


class Zygote:
    """Client of ``tests.reliability._zygote``: runs CLI commands in forked children it can SIGKILL."""

    def __init__(self, torch: bool = False, startup_timeout: float = 120):
        args = [sys.executable, "-m", "tests.reliability._zygote"] + (["--torch"] if torch else [])
        self.proc = subprocess.Popen(args, cwd=ROOT, env=cli_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        ready = self._read(startup_timeout)
        assert ready.get("ready"), ready

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("fork server did not answer")
            readable, _, _ = select.select([self.proc.stdout], [], [], left)
            if readable:
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"fork server exited with {self.proc.wait()}")
                return json.loads(line)

    def run(self, argv: list[str], logs: Path, kill_after: float | None = None, kill_when=None,
            pause: dict | None = None, env: dict | None = None, timeout: float = 60) -> tuple[int, str, str]:
        """Run ``agencerdas ARGV`` in a forked child; SIGKILL its process group ``kill_after`` seconds
        after it starts, or once ``kill_when()`` is true (polled), and return (status, stdout, stderr).
        A status of -9 means the kill landed; any other is the child's own exit code."""
        logs.mkdir(parents=True, exist_ok=True)
        command = {"argv": argv, "env": {"AGENCERDAS_CACHE_DIR": os.environ["AGENCERDAS_CACHE_DIR"], **(env or {})},
                   "stdout": str(logs / "stdout"), "stderr": str(logs / "stderr"), "pause": pause}
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        pid = self._read(30)["pid"]
        start = time.monotonic()
        killed = False
        while True:
            readable, _, _ = select.select([self.proc.stdout], [], [], 0.005)
            if readable:
                done = self._read(1)
                assert done["pid"] == pid
                break
            now = time.monotonic() - start
            if not killed and ((kill_after is not None and now >= kill_after) or (kill_when is not None and kill_when())):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                killed = True
            if now > timeout and not killed:
                os.killpg(pid, signal.SIGKILL)
                killed = True
                done = self._read(10)
                raise TimeoutError(f"{argv} still running after {timeout} s: {(logs / 'stderr').read_text()[-2000:]}")
        return done["status"], (logs / "stdout").read_text(), (logs / "stderr").read_text()

    def close(self) -> None:
        """Stop the server (it holds no state worth an orderly exit; its children are all reaped)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()
