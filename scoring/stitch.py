"""Whole-recording posteriors from sliding windows: chunking, speaker alignment, stitching.

The model is only seen through two callables, so this module works for any
frame-level EEND-style model and any feature source:

* ``read(start, frames) -> (frames, F)`` input features at the model frame rate;
* ``predict(x) -> (n, S)`` per-speaker activity probabilities in [0, 1] for one
  chunk of ``n`` frames.

An EEND model numbers its speakers arbitrarily in each chunk, so consecutive
chunks overlap and each chunk's speakers are permuted to agree with what has
already been accumulated on the shared frames before averaging. Frames are
finalised as soon as no later chunk can touch them, which makes
:func:`iter_stitched` a streaming generator that holds O(window) memory;
:func:`stitched_posteriors` collects its output for one recording.

Times: frame ``t`` covers ``[t * frame_shift_s, (t + 1) * frame_shift_s)`` seconds.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
from scipy.optimize import linear_sum_assignment

ReadFn = Callable[[int, int], np.ndarray]
PredictFn = Callable[[np.ndarray], np.ndarray]
# A permutation is adopted only if it lowers the overlap's mean squared error by
# more than this; otherwise (e.g. nobody speaks in the overlap, so every order
# fits equally well) the chunk keeps the identity order instead of a random one.
_PERMUTATION_GAIN = 1e-6


def chunk_starts(n_frames: int, window: int, step: int) -> Iterator[int]:
    """Chunk start frames: every ``step`` frames, plus one chunk ending exactly at ``n_frames``."""
    last = max(0, n_frames - window)
    start = 0
    while start < last:
        yield start
        start += step
    yield last


def _align(accumulated: np.ndarray, chunk: np.ndarray) -> np.ndarray:
    """Column order of ``chunk`` that best matches ``accumulated`` on the overlap.

    Args:
        accumulated: (overlap_frames, S) stitched posteriors so far.
        chunk: (overlap_frames, S) the new chunk's posteriors on the same frames.

    Returns:
        (S,) indices such that ``chunk[:, order]`` puts the chunk's speakers in
        the accumulated speaker order.
    """
    n_speakers = chunk.shape[1]
    identity = np.arange(n_speakers)
    if len(accumulated) == 0:
        return identity
    # cost[i, j]: mean squared difference between accumulated speaker i and chunk speaker j.
    cost = ((accumulated[:, :, None] - chunk[:, None, :]) ** 2).mean(axis=0)
    rows, cols = linear_sum_assignment(cost)
    order = np.empty(n_speakers, dtype=np.int64)
    order[rows] = cols
    if cost[identity, identity].sum() - cost[rows, cols].sum() <= _PERMUTATION_GAIN:
        return identity
    return order


def _predicted(predict: PredictFn, read: ReadFn, starts: list[int], length: int,
               batch: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, predict(read(start, length)))`` per chunk, in order; with ``batch`` > 1 up to ``batch``
    chunks are read, stacked (batch', length, F) and predicted in one call."""
    for first in range(0, len(starts), batch):
        group = starts[first : first + batch]
        inputs = [read(start, length) for start in group]
        for start, x in zip(group, inputs):
            if len(x) != length:
                raise ValueError(f"read({start}, {length}) returned {len(x)} frames")
        if batch == 1:
            yield group[0], predict(inputs[0])
        else:
            yield from zip(group, predict(np.stack(inputs)))


def iter_stitched(
    predict: PredictFn, read: ReadFn, n_frames: int, window: int, step: int, batch: int = 1
) -> Iterator[tuple[int, np.ndarray]]:
    """Stream stitched posteriors of a recording of any length, in time order.

    Chunks of ``window`` frames start every ``step`` frames and a last chunk
    ends exactly at ``n_frames`` (a recording shorter than ``window`` is one
    chunk of ``n_frames``). Each chunk's speakers are aligned to the running
    average on the frames it shares with earlier chunks (Hungarian assignment on
    the mean squared difference), then averaged in.

    Args:
        predict: maps a (n, F) chunk to (n, S) probabilities; S must not change.
        read: ``read(start, frames)`` returns (frames, F) input frames
            ``[start, start + frames)``. Always called with ``frames == min(window, n_frames)``.
        n_frames: recording length in model frames (> 0).
        window: chunk length in frames (> 0).
        step: hop between chunk starts in frames, ``1 <= step <= window``.
        batch: chunks per ``predict`` call. With ``batch`` > 1, ``predict`` maps a stack
            (b, n, F) of b <= batch chunks to (b, n, S) (a model on a device runs them as one
            batch); inputs held: O(batch * window * F). The result does not depend on it.

    Yields:
        ``(start, block)``: final float32 posteriors (len(block), S) for frames
        ``[start, start + len(block))``. Blocks are contiguous and cover
        ``[0, n_frames)``. Memory held: O(window * S).
    """
    if n_frames < 1 or window < 1:
        raise ValueError(f"n_frames={n_frames} and window={window} must be positive")
    if not 1 <= step <= window:
        raise ValueError(f"step={step} must be in [1, window={window}] so consecutive chunks leave no gap")
    length = min(window, n_frames)
    # Running sums and chunk counts for frames [base, base + length): the only
    # frames a later chunk can still touch.
    sums: np.ndarray | None = None
    counts = np.zeros(length, dtype=np.int64)
    base = 0
    if batch < 1:
        raise ValueError(f"batch={batch} must be at least 1")
    starts = list(chunk_starts(n_frames, window, step))
    for start, chunk in _predicted(predict, read, starts, length, batch):
        shift = start - base
        if sums is not None and shift > 0:
            yield base, (sums[:shift] / counts[:shift, None]).astype(np.float32)
            sums[: length - shift] = sums[shift:]
            sums[length - shift :] = 0.0
            counts[: length - shift] = counts[shift:]
            counts[length - shift :] = 0
        base = start
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.ndim != 2 or len(chunk) != length or (sums is not None and chunk.shape[1] != sums.shape[1]):
            expected = f"({length}, {'S' if sums is None else sums.shape[1]})"
            raise ValueError(f"predict returned shape {chunk.shape} for chunk at frame {start}, expected {expected}")
        if sums is None:
            sums = np.zeros((length, chunk.shape[1]), dtype=np.float64)
        seen = int(np.count_nonzero(counts))
        accumulated = sums[:seen] / counts[:seen, None]
        sums += chunk[:, _align(accumulated, chunk[:seen])]
        counts += 1
    assert sums is not None  # chunk_starts always yields at least one start
    yield base, (sums / counts[:, None]).astype(np.float32)


def stitched_posteriors(predict: PredictFn, read: ReadFn, n_frames: int, window: int, step: int,
                        batch: int = 1) -> np.ndarray:
    """Whole-recording posteriors: (n_frames, S) float32 in [0, 1].

    See :func:`iter_stitched` for the arguments. Memory is the output plus
    O(window): chunks are never all held; use :func:`iter_stitched` directly to
    stream the output too (e.g. to write it to disk as it is produced).
    """
    out: np.ndarray | None = None
    for start, block in iter_stitched(predict, read, n_frames, window, step, batch):
        if out is None:
            out = np.empty((n_frames, block.shape[1]), dtype=np.float32)
        out[start : start + len(block)] = block
    assert out is not None  # iter_stitched always yields
    return out
