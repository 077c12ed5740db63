"""A run directory: one owner at a time, and what a run writes there before its first epoch.

One process trains in a directory at a time. The run holds an exclusive ``flock`` on ``OUT/.lock`` from
before its first write to its end (rank 0 only under DDP: the other ranks never write there) and records
in it who holds it. A second ``train`` into the same directory, new, ``--resume`` or ``--overwrite``, is
refused naming that holder. The kernel drops the lock when its holder dies, so a run killed with SIGKILL
leaves nothing that blocks the next one: a ``flock`` lives as long as any copy of its descriptor, so a
child forked by the run (DataLoader workers, which outlive a killed parent by seconds) closes its copy
at once. The file is never deleted, so two processes can never lock two different files of one name.

Before any of that, :func:`check_run_dir` says whether ``train`` (the command and the Python API) may use the
directory at all: a run already there is continued only with ``--resume`` and replaced only with ``--overwrite``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path

from agencerdas.stores.errors import AgencerdasError
from agencerdas.stores.outputs import output_dir

#: Files whose presence says a directory holds a training run.
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "config.json")
#: What a run writes into its directory besides config.json, TensorBoard's event files and eval/.
RUN_ARTIFACTS = ("metrics.jsonl", "tuned.json", "best.pt", "last.pt", "corpus-stats.txt")
LOCK_NAME = ".lock"

def check_run_dir(path: Path, resume: bool, overwrite: bool) -> Path:
    """``--out`` of ``train``: a new run's directory, or the run to resume; an existing run is never
    replaced unless ``overwrite``."""
    output_dir(path, "--out")
    if resume and overwrite:
        raise AgencerdasError("--resume continues the run in --out and --overwrite replaces it; give one of them")
    found = [name for name in RUN_FILES if (Path(path) / name).exists()]
    if found and not (resume or overwrite):
        raise AgencerdasError(f"--out {path} already holds a run ({', '.join(found)}); continue it with --resume, "
                              "replace it with --overwrite, or give another --out")
    return path


#: Descriptors of the locks this process holds: a forked child closes its copies (see the module's docstring).
_HELD: set[int] = set()


def _close_held() -> None:
    """In a forked child: close the copies (never unlock: the lock is the parent's)."""
    for fd in _HELD:
        os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held)

#: (inode, size, mtime in ns) of each of RUN_FILES that exists, by name.
RunState = dict[str, tuple[int, int, int]]


def run_state(out: Path) -> RunState:
    """What of a run ``out`` holds now, to tell whether another process wrote there since."""
    state = {}
    for name in RUN_FILES:
        with contextlib.suppress(OSError):
            info = os.stat(Path(out) / name)
            state[name] = (info.st_ino, info.st_size, info.st_mtime_ns)
    return state


class RunLock:
    """The exclusive lock on run directory ``out``: :meth:`acquire` before the run's first write, :meth:`release`
    when it ends."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.fd: int | None = None

    def check_free(self) -> None:
        """Raise AgencerdasError naming the holder when another process holds the lock now: a probe before a
        run loads its data, which writes nothing (the lock is taken, and the holder recorded, by :meth:`acquire`)."""
        try:
            fd = os.open(self.out / LOCK_NAME, os.O_RDONLY)
        except OSError:  # no lock file: no run was ever started here
            return
        try:
            self._lock(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _lock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AgencerdasError(f"--out {self.out} is in use by another training run ({_holder(fd)}); wait for it "
                                  "to finish (or stop it), or give another --out") from None

    def acquire(self, checked: RunState) -> None:
        """Take the lock, or raise AgencerdasError naming its holder; ``checked`` is :func:`run_state` as this
        process found it before deciding to start, resume or replace the run, which must still be so."""
        self.out.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._lock(fd)
        except AgencerdasError:
            os.close(fd)
            raise
        self.fd = fd
        _HELD.add(fd)
        now = run_state(self.out)
        if now != checked:  # a run that started and finished while this one was loading its data
            self.release()
            names = sorted(name for name in set(now) | set(checked) if now.get(name) != checked.get(name))
            raise AgencerdasError(f"--out {self.out} changed while this run was starting ({', '.join(names)} written by "
                                  "another process); look at what it holds now, then --resume it, --overwrite it, or "
                                  "give another --out")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}).encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            _HELD.discard(self.fd)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it."""
    try:
        info = json.loads(os.pread(fd, 4096, 0))
        return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):  # taken an instant ago, not yet written
        return "a process that has just taken it"


def clear_run(out: Path) -> None:
    """Remove what a run wrote in ``out`` (its config, artifacts, TensorBoard events and eval/), keeping the
    lock and anything else the directory holds."""
    out = Path(out)
    for stale in (*(out / name for name in ("config.json", *RUN_ARTIFACTS)), *out.glob("events.out.tfevents.*")):
        stale.unlink(missing_ok=True)
    shutil.rmtree(out / "eval", ignore_errors=True)


def forget_metrics_after(out: Path, step: int) -> None:
    """Drop metrics.jsonl records logged after the checkpoint being resumed (they are redone) and records
    of partial epochs (the resumed epoch's record replaces them)."""
    path = Path(out) / "metrics.jsonl"
    if path.is_file():
        records = [json.loads(line) for line in path.read_text().splitlines() if line]
        kept = [json.dumps(r) for r in records if r["step"] <= step and not r.get("partial")]
        path.write_text("".join(line + "\n" for line in kept))


def check_source_outside(out: Path, init_from: str) -> None:
    """A new run in ``out`` replaces what is there: INIT_FROM must not lie inside it."""
    if init_from and Path(init_from).resolve().is_relative_to(Path(out).resolve()):
        raise AgencerdasError(f"INIT_FROM={init_from} lies inside --out {out}, whose old run this new run replaces "
                              "(the fine-tuned weights would overwrite their own source); copy the checkpoint out of "
                              "it first, or give another --out")
