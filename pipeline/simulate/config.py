"""Parameters of a simulated corpus, validated when constructed."""

from __future__ import annotations

import functools
import itertools
import math
import numbers
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence, TypeVar

import numpy as np

from agencerdas.pipeline.simulate.speakers import POOLS
from agencerdas.stores.errors import AgencerdasError

#: Output format name -> (libsndfile container, subtype).
FORMATS: dict[str, tuple[str, str]] = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}
# MPEG audio defines only these sample rates (Hz).
_MP3_RATES_HZ = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
#: Sample rates written, in Hz: from telephone speech to studio rates (a 1-Hz "recording" holds no speech).
RATES_HZ = (8000, 192000)
#: Longest recording simulated, in seconds: each is rendered whole in memory (an hour at 48 kHz: 0.7 GB of float32).
MAX_DURATION_S = 7200.0
# Mixed into the seed of the held-out draw, so it is a stream of its own (conversations use [seed, pool, index]).
_HELDOUT_STREAM = 0x68656C64
Voice = TypeVar("Voice")


@functools.lru_cache(maxsize=16)
def _balanced_cycle(dimensions: tuple[tuple, ...]) -> tuple[tuple, ...]:
    """Every combination of one value per dimension, ordered so each prefix is balanced.

    Each next combination is the one whose values have been used least so far (ties
    in product order), so even a handful of recordings covers every format, rate and
    channel count, and a full cycle covers every combination once.
    """
    remaining = list(itertools.product(*dimensions))
    used = [Counter() for _ in dimensions]
    order = []
    while remaining:
        best = min(remaining, key=lambda combo: sum(used[d][v] for d, v in enumerate(combo)))
        remaining.remove(best)
        for d, value in enumerate(best):
            used[d][value] += 1
        order.append(best)
    return tuple(order)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@functools.lru_cache(maxsize=16)
def _heldout_recordings(seed: int, pool: int, n_recordings: int, held: int, pool_size: int) -> frozenset[int]:
    """``round(n_recordings * held / pool_size)`` recording indices (at least 1, at most all but one), drawn
    from their own random stream of ``seed``; none when ``held`` is 0."""
    if held == 0:
        return frozenset()
    count = min(max(round(n_recordings * held / pool_size), 1), n_recordings - 1)
    rng = np.random.default_rng([seed, pool, n_recordings, held, _HELDOUT_STREAM])
    return frozenset(int(i) for i in rng.choice(n_recordings, size=count, replace=False))


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that determines a simulated corpus; same config -> same corpus.

    Recording layout: ``n_recordings`` conversations named ``<prefix>_0001`` ...,
    each ``min_duration_s``..``max_duration_s`` seconds long (uniform), with a number
    of speakers drawn from ``speakers_per_rec`` (speaker count -> weight) out of the
    ``pool`` speaker pool. Train and test pools are disjoint when both corpora use
    the same ``pool_seed``, ``train_pool_size`` and ``test_pool_size``.

    Turn taking (after Landini et al., 2022): the next speaker is the current one
    with probability ``p_same_speaker`` (after an exponential pause of mean
    ``pause_same_mean_s``); otherwise another speaker takes the turn and, with
    probability ``p_overlap``, starts before the current turn ends by an exponential
    overlap of mean ``overlap_mean_s`` seconds (capped by the length of that turn),
    else after an exponential pause of mean ``pause_mean_s``. A turn has a geometric
    number of words with mean ``mean_words``.

    Output: each recording gets one (format, rate in Hz, channel count) of the
    cartesian product of ``formats``, ``rates`` and (mono, and stereo when
    ``stereo``), cycling through it by recording index in a balanced order. ``noise_snr_db`` adds
    coloured background noise at that signal-to-noise ratio in dB (None: none);
    ``reverb`` convolves each speaker with a synthetic room impulse response.
    ``seed`` fixes everything random about the recordings, ``jobs`` is the number
    of worker processes (joblib convention: -1 = all cores).

    Held-out voices: with ``heldout_voices`` K > 0, the last K voices of the pool speak only in
    their own recordings: a share K / pool size of the recordings (at least one, chosen by
    ``seed``) are conversations among those K voices, every other recording is drawn from the
    other voices, so a validation split can hold voices that training never hears.
    """

    n_recordings: int = 10
    pool: str = "train"
    prefix: str | None = None
    pool_seed: int = 0
    train_pool_size: int = 40
    test_pool_size: int = 12
    speakers_per_rec: Mapping[int, float] = field(default_factory=lambda: {2: 0.5, 3: 0.3, 4: 0.2})
    min_duration_s: float = 60.0
    max_duration_s: float = 240.0
    formats: tuple[str, ...] = ("wav",)
    rates: tuple[int, ...] = (16000,)
    stereo: bool = False
    noise_snr_db: float | None = None
    reverb: bool = False
    p_same_speaker: float = 0.1
    p_overlap: float = 0.5
    overlap_mean_s: float = 1.0
    pause_mean_s: float = 0.4
    pause_same_mean_s: float = 0.6
    mean_words: float = 8.0
    seed: int = 0
    jobs: int = 1
    heldout_voices: int = 0

    def __post_init__(self) -> None:
        # Accept lists and mixed-case names from a command line; store canonical values.
        object.__setattr__(self, "formats", tuple(str(f).lower().lstrip(".") for f in self.formats))
        object.__setattr__(self, "rates", tuple(int(r) if _is_int(r) else r for r in self.rates))
        object.__setattr__(
            self, "speakers_per_rec", {int(k) if _is_int(k) else k: w for k, w in self.speakers_per_rec.items()}
        )
        if self.prefix is None:
            object.__setattr__(self, "prefix", self.pool)
        self._validate()

    def _validate(self) -> None:
        def fail(message: str) -> None:
            raise AgencerdasError(f"simulation config: {message}")

        if self.n_recordings < 1:
            fail(f"n_recordings must be at least 1, got {self.n_recordings}")
        if self.pool not in POOLS:
            fail(f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        if not self.prefix or any(c.isspace() or c in "/\\" for c in self.prefix):
            fail(f"prefix {self.prefix!r} must be non-empty, without whitespace or path separators")
        if self.train_pool_size < 1 or self.test_pool_size < 1:
            fail(f"pool sizes must be at least 1, got train={self.train_pool_size} test={self.test_pool_size}")
        weights = self.speakers_per_rec
        if not weights or any(not _is_int(k) or k < 1 for k in weights):
            fail(f"speakers_per_rec needs positive integer speaker counts as keys, got {weights}")
        if any(not _is_number(w) or not 0 <= w < math.inf for w in weights.values()):
            fail(f"speakers_per_rec (--speakers) weights must be finite numbers >= 0, got {weights}")
        if not 0 < sum(weights.values()) < math.inf:  # the shares are the weights over their sum (numpy divides so)
            fail(f"speakers_per_rec (--speakers) weights must have a positive, finite sum (they are normalised by it), got "
                 f"{weights}; use shares such as 2:0.5,3:0.3,4:0.2")
        pool_size = self.train_pool_size if self.pool == "train" else self.test_pool_size
        most = max(k for k, w in weights.items() if w > 0)
        if most > pool_size:
            fail(
                f"conversations with up to {most} speakers need a {self.pool} pool of at least {most} "
                f"speakers, but {self.pool}_pool_size is {pool_size}; enlarge the pool or lower speakers_per_rec"
            )
        self._validate_heldout(pool_size, most, fail)
        if not 0 < self.min_duration_s <= self.max_duration_s or not math.isfinite(self.max_duration_s):
            fail(f"need 0 < min_duration_s <= max_duration_s, got {self.min_duration_s} and {self.max_duration_s}")
        if self.max_duration_s > MAX_DURATION_S:
            fail(f"max_duration_s (--max-duration) {self.max_duration_s:g} s is above {MAX_DURATION_S:g} s: a recording "
                 "is rendered whole in memory; simulate more recordings instead of longer ones")
        if not self.formats:
            fail("formats is empty; choose from " + ", ".join(FORMATS))
        for name in self.formats:
            if name not in FORMATS:
                fail(f"unknown audio format {name!r}; choose from {', '.join(FORMATS)}")
        if not self.rates:
            fail("rates is empty; give at least one sample rate in Hz, e.g. 16000")
        for rate in self.rates:
            if not _is_int(rate) or not RATES_HZ[0] <= rate <= RATES_HZ[1]:
                fail(f"sample rate {rate!r} (--rates) must be an integer number of Hz from {RATES_HZ[0]} to "
                     f"{RATES_HZ[1]}")
            if "mp3" in self.formats and rate not in _MP3_RATES_HZ:
                fail(f"mp3 cannot store {rate} Hz; MPEG audio rates are {sorted(_MP3_RATES_HZ)}")
        if self.noise_snr_db is not None and not math.isfinite(self.noise_snr_db):
            fail(f"noise_snr_db must be a finite number of dB or None, got {self.noise_snr_db}")
        for name in ("p_same_speaker", "p_overlap"):
            if not 0 <= getattr(self, name) <= 1:
                fail(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        for name in ("overlap_mean_s", "pause_mean_s", "pause_same_mean_s"):
            if not 0 <= getattr(self, name) < math.inf:
                fail(f"{name} must be a finite number of seconds >= 0, got {getattr(self, name)}")
        if not 1 <= self.mean_words < math.inf:
            fail(f"mean_words must be at least 1, got {self.mean_words}")
        if self.jobs == 0:
            fail("jobs must be a positive number of processes, or negative as in joblib (-1 = all cores)")

    def _validate_heldout(self, pool_size: int, most: int, fail) -> None:
        held = self.heldout_voices
        if not _is_int(held) or held < 0:
            fail(f"heldout_voices (--heldout-voices) must be a whole number >= 0, got {held!r}")
        if held == 0:
            return
        if held > pool_size - most or held < most:
            fail(f"heldout_voices={held}: conversations with up to {most} speakers need at least {most} held-out "
                 f"voices and {most} others in the {self.pool} pool of {pool_size}; choose {most}..{pool_size - most}")
        if self.n_recordings < 2:
            fail(f"heldout_voices needs at least 2 recordings (held-out ones and others), got n_recordings={self.n_recordings}")

    def heldout_recordings(self) -> frozenset[int]:
        """Indices (0-based) of the recordings spoken by the held-out voices; empty without them."""
        return _heldout_recordings(self.seed, POOLS.index(self.pool), self.n_recordings, self.heldout_voices,
                                   self.train_pool_size if self.pool == "train" else self.test_pool_size)

    def voices_of(self, pool: Sequence[Voice], index: int) -> Sequence[Voice]:
        """The voices recording ``index`` draws its speakers from: the last ``heldout_voices`` of ``pool``
        for a held-out recording, the others otherwise (the whole pool without held-out voices)."""
        if not self.heldout_voices:
            return pool
        split = len(pool) - self.heldout_voices
        return pool[split:] if index in self.heldout_recordings() else pool[:split]

    def layout(self, index: int) -> tuple[str, int, int]:
        """(format, sample rate in Hz, channels) of recording ``index`` (0-based)."""
        cycle = _balanced_cycle((self.formats, self.rates, (1, 2) if self.stereo else (1,)))
        return cycle[index % len(cycle)]

    def to_json(self) -> dict:
        """The config as JSON-ready values (speaker-count keys become strings)."""
        values = asdict(self)
        values["speakers_per_rec"] = {str(k): w for k, w in sorted(self.speakers_per_rec.items())}
        values["formats"], values["rates"] = list(self.formats), list(self.rates)
        return values
