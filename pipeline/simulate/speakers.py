"""Simulated speakers: reproducible eSpeak NG voices, split into disjoint train and test pools.

A speaker is a language, a voice variant (the timbre: formants, base pitch, roughness,
synthesis engine) and its own prosody (pitch, intonation range, speaking rate). The
variants are split between the pools before speakers are drawn, so test speakers
have timbres never heard in training: evaluation on the test pool measures
generalisation to unseen voices, not only to unseen prosody settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from agencerdas.stores.errors import AgencerdasError

#: eSpeak NG language -> key of :data:`pipeline.simulate.words.WORDS`.
LANGUAGES: dict[str, str] = {"id": "id", "ms": "ms", "en-us": "en", "en": "en"}

# Variants that sound like a plausible human talker (no robots, echo chambers or
# whispers), all present in the voice data of espeakng-loader 0.2.4. The Klatt
# variants use a different synthesis engine, which widens the range of timbres.
FEMALE_VARIANTS: tuple[str, ...] = (
    "f1", "f2", "f3", "f4", "f5", "Andrea", "Annie", "aunty", "belinda", "grandma", "linda", "steph",
)
MALE_VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "croak", "grandpa", "Andy", "Denis",
    "Michael", "robert", "victor", "travis", "klatt", "klatt2", "klatt3", "klatt4",
)

POOLS: tuple[str, ...] = ("train", "test")

# Prosody ranges, inclusive. Pitch and range are on eSpeak's 0-100 scale relative to
# the variant (50 = the variant's own); rate is in words per minute.
_PITCH = (30, 70)
_PITCH_RANGE = (30, 80)
_RATE_WPM = (145, 195)


@dataclass(frozen=True)
class Speaker:
    """One simulated talker; ``id`` is unique across both pools."""

    id: str
    language: str
    variant: str
    pitch: int
    pitch_range: int
    rate_wpm: int

    @property
    def voice(self) -> str:
        """eSpeak NG voice name, e.g. ``id+f3``."""
        return f"{self.language}+{self.variant}"

    @property
    def words(self) -> str:
        """Key of the word list in this speaker's language."""
        return LANGUAGES[self.language]

    def to_json(self) -> dict:
        return {**asdict(self), "voice": self.voice}


def _split_variants(pool_seed: int, train_size: int, test_size: int) -> dict[str, list[str]]:
    """Variants per pool: each gender split in proportion to the pool sizes, both pools non-empty."""
    rng = np.random.default_rng([pool_seed, 0])
    split: dict[str, list[str]] = {"train": [], "test": []}
    for variants in (FEMALE_VARIANTS, MALE_VARIANTS):
        shuffled = [variants[i] for i in rng.permutation(len(variants))]
        n_test = round(len(variants) * test_size / (train_size + test_size))
        n_test = min(max(n_test, 1), len(variants) - 1)
        split["test"] += shuffled[:n_test]
        split["train"] += shuffled[n_test:]
    return split


def speaker_pools(pool_seed: int = 0, train_size: int = 40, test_size: int = 12) -> dict[str, tuple[Speaker, ...]]:
    """The ``train`` and ``test`` speaker pools for ``pool_seed``; no speaker or variant is in both.

    Deterministic in its three arguments: a train corpus and a test corpus are
    disjoint only when both are generated with the same ``pool_seed`` and sizes.
    Speakers cycle through every (language, variant) pair of their pool before any
    pair is reused (with other prosody), so a pool larger than its number of pairs
    is allowed but contains related voices.
    """
    if train_size < 1 or test_size < 1:
        raise AgencerdasError(f"speaker pool sizes must be at least 1, got train={train_size} test={test_size}")
    variants = _split_variants(pool_seed, train_size, test_size)
    pools: dict[str, tuple[Speaker, ...]] = {}
    for code, (pool, size) in enumerate((("train", train_size), ("test", test_size)), start=1):
        rng = np.random.default_rng([pool_seed, code])
        pairs = [(language, variant) for language in LANGUAGES for variant in variants[pool]]
        order = rng.permutation(len(pairs))
        speakers = []
        for index in range(size):
            language, variant = pairs[order[index % len(pairs)]]
            speakers.append(
                Speaker(
                    id=f"{pool}-spk{index:03d}",
                    language=language,
                    variant=variant,
                    pitch=int(rng.integers(_PITCH[0], _PITCH[1] + 1)),
                    pitch_range=int(rng.integers(_PITCH_RANGE[0], _PITCH_RANGE[1] + 1)),
                    rate_wpm=int(rng.integers(_RATE_WPM[0], _RATE_WPM[1] + 1)),
                )
            )
        pools[pool] = tuple(speakers)
    return pools


def speaker_pool(pool: str, pool_seed: int = 0, train_size: int = 40, test_size: int = 12) -> tuple[Speaker, ...]:
    """One pool (``train`` or ``test``) of :func:`speaker_pools`."""
    if pool not in POOLS:
        raise AgencerdasError(f"unknown speaker pool {pool!r}; choose one of {', '.join(POOLS)}")
    return speaker_pools(pool_seed, train_size, test_size)[pool]
