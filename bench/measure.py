"""Timing and memory probes shared by the benchmark sections.

Times are wall-clock seconds from :func:`time.perf_counter`; memory is MiB
(2**20 bytes) of resident set size (RSS) or of CUDA allocations.
"""

from __future__ import annotations

import itertools
import resource
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Iterator, TypeVar

import psutil

T = TypeVar("T")


def peak_rss_mb(children: bool = False) -> float:
    """Peak RSS in MiB of this process, or of its largest reaped child process.

    On Linux this process's figure is ``VmHWM`` (the high-water mark of its own
    address space): ``ru_maxrss`` would also count the RSS of the parent at the
    fork that started this interpreter. Children's figures (``ru_maxrss`` of
    ``RUSAGE_CHILDREN``) carry that floor.
    """
    if not children:
        try:
            with open("/proc/self/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024  # kB
        except OSError:
            pass
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    unit = 1 if sys.platform == "darwin" else 2**10  # ru_maxrss is bytes on macOS, KiB on Linux
    return usage.ru_maxrss * unit / 2**20


def cpu_seconds() -> float:
    """User + system CPU seconds used so far by this process and every process under it.

    Exited children count once reaped (``RUSAGE_CHILDREN``); live ones, such as the worker
    pool that joblib keeps for the next call, are read from ``/proc`` with their own reaped
    children. Take the difference of two calls to get the cost of what ran between them.
    """
    own, reaped = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:  # exited between listing and reading
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def rss_mb() -> float:
    """Current RSS of this process in MiB."""
    return psutil.Process().memory_info().rss / 2**20


class RssSampler:
    """Peak RSS of this process and of its live child processes, sampled by a thread.

    ``ru_maxrss`` only grows, so it cannot tell two phases of one process apart;
    the sampler can: :meth:`reset` before a phase, read :attr:`peak_self_mb` and
    :attr:`peak_children_mb` (the sum over all children, e.g. DataLoader workers)
    after it. Peaks shorter than ``interval_s`` may be missed.
    """

    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.peak_self_mb = self.peak_children_mb = 0.0
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        self.peak_self_mb = max(self.peak_self_mb, self._process.memory_info().rss / 2**20)
        total = 0
        for child in self._process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:  # a worker that exited between listing and reading
                pass
        self.peak_children_mb = max(self.peak_children_mb, total / 2**20)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def reset(self) -> None:
        """Start a new phase: peaks restart from the current RSS."""
        self.peak_self_mb = self.peak_children_mb = 0.0
        self._sample()

    def __enter__(self) -> "RssSampler":
        self.reset()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


@dataclass
class Throughput:
    """``items`` processed in ``seconds`` of steady state, after ``startup_s`` to the first item."""

    items: int
    seconds: float
    startup_s: float = 0.0

    @property
    def per_s(self) -> float:
        """Items per second of steady state (0 when nothing was timed)."""
        return self.items / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "per_s": self.per_s}


def iterate_for(items: Iterable[T], count: Callable[[T], int], seconds: float, min_items: int = 1,
                max_items: int | None = None, skip: int = 1) -> Throughput:
    """Consume ``items`` until ``seconds`` of steady state and ``min_items`` are reached (or ``max_items``).

    ``count(item)`` says how many units an item holds (a batch's windows). The first
    ``skip`` items only end the start-up phase (process start, first reads, JIT) and
    are not counted, so the rate is the steady state; with N reader processes skip N
    items, one warm-up per process. A generator is closed when done.
    """
    start = time.perf_counter()
    first = start if skip == 0 else None
    done = skipped = 0
    iterator = iter(items)
    try:
        for item in iterator:
            units = count(item)
            now = time.perf_counter()
            if first is None:
                skipped += 1
                if skipped == skip:
                    first = now
                continue
            done += units
            if (now - first >= seconds and done >= min_items) or (max_items is not None and done >= max_items):
                break
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    end = time.perf_counter()
    first = end if first is None else first
    return Throughput(done, end - first, first - start)


def repeat_for(step: Callable[[], int], seconds: float, min_items: int = 1, max_items: int | None = None,
               skip: int = 1) -> Throughput:
    """Call ``step()`` (returning the units it processed) like :func:`iterate_for` consumes an iterable."""

    def calls() -> Iterable[int]:
        while True:
            yield step()

    return iterate_for(calls(), int, seconds, min_items, max_items, skip)


def ratio(value: float | None, baseline: float | None) -> float | None:
    """``value / baseline``, or None when either is missing or the baseline is zero."""
    if value is None or baseline is None or baseline == 0:
        return None
    return value / baseline


def epochs(plan: Any, source: Iterable[Any] | None = None) -> Iterator[Any]:
    """``source`` (a loader over ``plan``; by default the plan's own batches) epoch after epoch, as
    ``Trainer.fit`` feeds it: ``plan.set_epoch`` before each."""
    for epoch in itertools.count():
        plan.set_epoch(epoch)
        yield from plan if source is None else source
