"""New conversations every epoch: training windows laid out from the store's own speakers.

A corpus of 135 recordings shows a model the same ~135 speaker line-ups every epoch; the
end-to-end diarization literature gets its low DERs from very many simulated mixtures
(SA-EEND, EEND-EDA), best when they follow real turn-taking (Landini et al., 2022). The
single-speaker stretches of the training labels are that material, already featurised:

* :class:`SegmentBank` collects, from the train split's base-rate labels, every region
  where exactly one speaker talks (at least ``min_frames`` long) per source, the
  non-speech regions per recording, and the corpus's own statistics: turn lengths,
  pauses between turns of the same and of different speakers, overlap lengths and rate,
  and speakers per recording;
* :meth:`SegmentBank.recipe` lays out one window from a seed: k speakers (k drawn from
  the corpus's distribution) from k different identities, turns whose lengths, pauses
  and overlaps are drawn from the measured distributions, a per-speaker gain and mel
  warp (VTLP-like: one source voice becomes several, as a shorter or longer vocal tract
  would make it), and a background of non-speech frames from the first speaker's recording;
* the recipe is mixed in the mel-power domain, log(e^a + e^b) of the stored log-mels (what
  the spectra of uncorrelated sources add to), by :func:`render` on the host or by the
  device-resident batch builder; labels come exactly from the layout.

Identity: the numbers of :mod:`training.identities`. By default every (recording, speaker) is its
own source, so a voice is never mixed with itself within a recording's labels; with
``speaker_ids="global"`` RTTM speaker names are identities across recordings (corpora like AMI name
speakers globally), so the same person recorded twice is never mixed with themselves either — which
would teach the model that one voice is two speakers. A recipe carries its slots' identity numbers,
the same numbers the real windows' ``speakers`` give. Nothing is written to the store; validation
never sees these windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from agencerdas.stores.errors import AgencerdasError

from .augment import stretch_rows

#: A run of rows placed in a window: (first frame in the window, recording, first frame there, frames).
Run = tuple[int, int, int, int]
#: The log-mel value of silence where a corpus has no non-speech frames (natural log of the 1e-10 floor).
FLOOR = float(np.log(1e-10))


def runs_of(active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of the runs of True in a bool (n,) array, in frames."""
    edges = np.diff(np.concatenate(([0], active.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return starts, ends - starts


@dataclass
class CorpusStats:
    """Turn-taking statistics of the train split, in base frames unless named otherwise."""

    turns: np.ndarray  # every turn's length
    pauses_other: np.ndarray  # gaps before a turn of another speaker (> 0)
    pauses_same: np.ndarray  # gaps before the same speaker's next turn (> 0)
    overlaps: np.ndarray  # lengths of the overlaps where a turn starts before the previous ends
    transitions: int  # consecutive turn pairs
    speakers: dict[int, int] = field(default_factory=dict)  # speakers in a recording -> recordings

    @property
    def overlap_rate(self) -> float:
        """Fraction of turn transitions that overlap."""
        return len(self.overlaps) / max(1, self.transitions)

    def describe(self, frame_s: float) -> str:
        def dist(x: np.ndarray) -> str:
            if not len(x):
                return "none"
            q = np.percentile(x, [10, 50, 90]) * frame_s
            return f"median {q[1]:.2f} s (10-90%: {q[0]:.2f}-{q[2]:.2f} s, n={len(x)})"

        counts = ", ".join(f"{k}: {n}" for k, n in sorted(self.speakers.items()))
        return "\n".join([
            f"  turns {dist(self.turns)}",
            f"  pauses before another speaker {dist(self.pauses_other)}; before the same speaker {dist(self.pauses_same)}",
            f"  overlaps {dist(self.overlaps)}, {100 * self.overlap_rate:.0f}% of {self.transitions} turn transitions",
            f"  speakers per recording {counts}",
        ])


@dataclass
class Recipe:
    """One simulated window of ``frames`` base frames: the background runs (covering the whole
    window), each speaker slot's runs, each slot's gain in log-power units and mel-axis stretch."""

    frames: int
    background: list[Run]
    slots: list[list[Run]]
    gains: np.ndarray  # (k,) float32
    alphas: np.ndarray  # (k,) float32, 1 = the stored voice
    identities: np.ndarray  # (k,) int64, each slot's identity (training.identities)

    def speakers(self, max_speakers: int) -> np.ndarray:
        """(max_speakers,) int64: each slot's identity, then -1 for the columns no slot fills."""
        out = np.full(max_speakers, -1, dtype=np.int64)
        out[: len(self.identities)] = self.identities
        return out

    def labels(self, max_speakers: int) -> np.ndarray:
        """(frames, max_speakers) uint8: slot s speaks where its runs are, exactly."""
        out = np.zeros((self.frames, max_speakers), dtype=np.uint8)
        for s, runs in enumerate(self.slots):
            for dst, _, _, n in runs:
                out[dst : dst + n, s] = 1
        return out


class SegmentBank:
    """Single-speaker regions, non-speech regions and turn statistics of the train split.

    Args:
        labels: per recording, (n, S) uint8 base-rate activity (capped like training; any number of
            columns), or None for a recording that gives no material (pseudo labels: its "silence" may
            be speech, its "single speaker" regions guesses); it keeps its index, so runs still name
            recordings by position.
        identities: per recording, (S,) int64 the identity of each label column
            (:func:`training.identities.number_speakers`); a column of identity -1 gives no voice.
        scored: per recording, (n,) bool UEM frames or None (all).
        min_frames: shortest single-speaker region used as material.
        max_speakers: speakers per window at most (the model's outputs).
        gain_db: per-speaker gain drawn uniformly in [-gain_db, gain_db].
        warp: per-speaker mel-axis stretch drawn uniformly in [1 - warp, 1 + warp] (0: none).
    """

    def __init__(self, labels: list[np.ndarray | None], identities: list[np.ndarray], scored: list[np.ndarray | None],
                 min_frames: int, max_speakers: int, gain_db: float = 3.0, warp: float = 0.0):
        self.max_speakers, self.gain_db, self.warp = max_speakers, gain_db, warp
        by_identity: dict[int, list[tuple[int, int, int]]] = {}  # identity -> [(rec, start, length)]
        self.silence: list[list[tuple[int, int]]] = []  # per recording: non-speech (start, length)
        turns, other, same, overlaps, transitions, per_rec = [], [], [], [], 0, {}
        for rec, (y, numbers, inside) in enumerate(zip(labels, identities, scored)):
            if y is None:
                self.silence.append([])
                continue
            y = y.astype(bool)
            if inside is not None:
                y = y & inside[: len(y), None]
            active = y.sum(axis=1)
            starts, lengths = runs_of((active == 0) if inside is None else (active == 0) & inside[: len(y)])
            self.silence.append([(int(s), int(n)) for s, n in zip(starts, lengths) if n >= 10])
            spoken = [c for c in range(y.shape[1]) if y[:, c].any()]
            per_rec[len(spoken)] = per_rec.get(len(spoken), 0) + 1
            recording_turns = []
            for c in spoken:
                if c < len(numbers) and numbers[c] >= 0:
                    starts, lengths = runs_of(y[:, c] & (active == 1))
                    keep = lengths >= min_frames
                    by_identity.setdefault(int(numbers[c]), []).extend(
                        (rec, int(s), int(n)) for s, n in zip(starts[keep], lengths[keep]))
                t_starts, t_lengths = runs_of(y[:, c])
                turns.extend(t_lengths.tolist())
                recording_turns += [(int(s), int(s + n), c) for s, n in zip(t_starts, t_lengths)]
            recording_turns.sort()
            for (s0, e0, c0), (s1, e1, c1) in zip(recording_turns, recording_turns[1:]):
                transitions += 1
                if s1 < e0:
                    overlaps.append(min(e0, e1) - s1)
                else:
                    (same if c0 == c1 else other).append(s1 - e0)
        voiced = [(number, segments) for number, segments in by_identity.items() if segments]
        self.identities = [segments for _, segments in voiced]  # material per identity with any
        self.numbers = np.array([number for number, _ in voiced], dtype=np.int64)  # their identity numbers
        self.stats = CorpusStats(np.asarray(turns), np.asarray([p for p in other if p > 0]),
                                 np.asarray([p for p in same if p > 0]), np.asarray(overlaps), transitions, per_rec)
        if len(self.identities) < 2 or not len(self.stats.turns):
            raise AgencerdasError(
                f"simulated conversations need single-speaker regions of at least {min_frames} frames from two or "
                f"more speakers; this train split has {len(self.identities)}; set SIM_PROB=0, or lower "
                "SIM_MIN_SEGMENT_S")
        if not len(self.stats.pauses_other) and not len(self.stats.overlaps):
            raise AgencerdasError(
                "simulated conversations follow the corpus's turn-taking, but no training recording has turns of two "
                "speakers (one speaker per recording?); set SIM_PROB=0")
        weights = np.asarray([per_rec.get(k, 0) for k in range(1, max_speakers + 1)], dtype=np.float64)
        weights[max_speakers - 1] += sum(n for k, n in per_rec.items() if k > max_speakers)
        weights[: min(len(self.identities), max_speakers)] += 1e-9  # a corpus of silent recordings still works
        weights[len(self.identities):] = 0.0
        self._k = weights / weights.sum()

    def recipe(self, seed: int, frames: int) -> Recipe:
        """The window drawn from ``seed`` (the same seed gives the same window on every path)."""
        rng = np.random.default_rng(seed)
        k = int(rng.choice(len(self._k), p=self._k)) + 1
        chosen = rng.choice(len(self.identities), size=k, replace=False)
        slots: list[list[Run]] = [[] for _ in range(k)]
        stats = self.stats
        t = _pick(rng, stats.pauses_other) if len(stats.pauses_other) and rng.random() < 0.5 else 0
        previous, last, ends = -1, 0, [0] * k
        while t < frames:
            slot = int(rng.integers(k)) if k == 1 or previous < 0 else int((previous + 1 + rng.integers(k - 1)) % k)
            if previous >= 0:  # the gap after the last turn: an overlap, or a pause, as the corpus has them
                if slot != previous and len(stats.overlaps) and rng.random() < stats.overlap_rate:
                    t -= min(_pick(rng, stats.overlaps), last - 1)
                else:
                    pauses = stats.pauses_same if slot == previous and len(stats.pauses_same) else stats.pauses_other
                    t += _pick(rng, pauses) if len(pauses) else 0
                t = max(t, ends[slot])  # a voice never overlaps itself
                if t >= frames:
                    break
            segments = self.identities[int(chosen[slot])]
            rec, start, length = segments[int(rng.integers(len(segments)))]
            n = min(_pick(rng, stats.turns), length, frames - t)
            offset = int(rng.integers(0, length - n + 1))
            slots[slot].append((t, rec, start + offset, n))
            previous, last = slot, n
            t += n
            ends[slot] = t
        background = self._background(rng, int(slots[0][0][1]) if slots[0] else 0, frames)
        gains = rng.uniform(-self.gain_db, self.gain_db, k) * (np.log(10.0) / 10.0) if self.gain_db else np.zeros(k)
        # drawn last, so a warp changes the voices and never the layout of the same seed
        alphas = rng.uniform(1.0 - self.warp, 1.0 + self.warp, k) if self.warp else np.ones(k)
        return Recipe(frames, background, slots, gains.astype(np.float32), alphas.astype(np.float32),
                      self.numbers[chosen])

    def _background(self, rng: np.random.Generator, rec: int, frames: int) -> list[Run]:
        """Non-speech runs of ``rec`` (else of any recording) tiled over ``frames``; [] if the corpus has none."""
        pool = self.silence[rec] or [run for runs in self.silence for run in runs]
        source = rec if self.silence[rec] else None
        out, t = [], 0
        while pool and t < frames:
            index = int(rng.integers(len(pool)))
            start, length = pool[index]
            owner = source if source is not None else _owner(self.silence, pool, index)
            n = min(length, frames - t)
            out.append((t, owner, start, n))
            t += n
        return out


def _pick(rng: np.random.Generator, values: np.ndarray) -> int:
    """One of ``values`` uniformly (an empirical distribution's draw; ``rng.choice`` costs 10x more)."""
    return int(values[rng.integers(len(values))])


def _owner(silence: list[list[tuple[int, int]]], pool: list[tuple[int, int]], index: int) -> int:
    """The recording of ``pool[index]`` when ``pool`` is every recording's silence, concatenated."""
    for rec, runs in enumerate(silence):
        if index < len(runs):
            return rec
        index -= len(runs)
    raise IndexError(index)


def render(recipe: Recipe, fetch) -> np.ndarray:
    """The mixed raw log-mel (frames, n_mels) float32 of ``recipe``; ``fetch(rec, start, n)`` returns
    stored rows (n, n_mels) of a recording. Each speaker's rows are stretched and gained, then the
    sources add in power: log(e^a + e^b + ...); frames no source covers are silence at the log floor."""
    power, covered = None, np.zeros(recipe.frames, dtype=bool)
    for runs, gain, alpha in [(recipe.background, 0.0, 1.0), *zip(recipe.slots, recipe.gains, recipe.alphas)]:
        for dst, rec, start, n in runs:
            rows = np.asarray(fetch(rec, start, n), dtype=np.float32)
            if alpha != 1.0:
                rows = stretch_rows(torch.from_numpy(rows), torch.full((n,), float(alpha))).numpy()
            rows = np.exp(rows + np.float32(gain))
            if power is None:
                power = np.zeros((recipe.frames, rows.shape[1]), dtype=np.float32)
            power[dst : dst + n] += rows
            covered[dst : dst + n] = True
    out = np.log(power, out=power, where=covered[:, None])
    out[~covered] = FLOOR
    return out
