"""The voices split: validation recordings whose speakers the train split never has.

When a corpus names its speakers across recordings (``train-spk025`` is one person wherever it
speaks), a recording split validates on voices that training has heard, and every choice made on
it favours memorising voices. Here recordings linked by a shared speaker name form one group (a
connected component), and whole groups go to validation: then no validation speaker is ever in a
train recording. A corpus that names speakers per recording (``A``, ``B``) or draws every
recording from one pool of voices is one giant group; no group fits, and the caller falls back to
the recording split.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import xxhash


def voice_groups(speakers: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Recording ids (keys of ``speakers``: recording id -> its speaker names) grouped into connected
    components of the shared-speaker graph; each group sorted, groups in order of their first id."""
    parent = {rec: rec for rec in speakers}

    def root(rec: str) -> str:
        while parent[rec] != rec:
            parent[rec] = parent[parent[rec]]  # path halving keeps the trees flat
            rec = parent[rec]
        return rec

    first_with: dict[str, str] = {}
    for rec in sorted(speakers):
        for name in speakers[rec]:
            other = first_with.setdefault(name, rec)
            a, b = root(rec), root(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[str, list[str]] = {}
    for rec in sorted(speakers):
        groups.setdefault(root(rec), []).append(rec)
    return list(groups.values())


def voice_validation(speakers: Mapping[str, Sequence[str]], target: int, seed: int) -> tuple[set[str] | None, str]:
    """Validation recordings made of whole :func:`voice_groups`, and in words what was held out.

    Groups are ranked by a seeded hash of their smallest recording id (for groups of one recording,
    the recording split's own ranking) and taken in that order until ``target`` recordings are
    reached; a group is skipped when it would bring validation above ``2 * target`` recordings or
    leave train empty, so validation is about ``target`` recordings, never all of them. Returns None
    for the set (and the reason) when no group fits: the caller falls back to the recording split.
    """
    if target <= 0:
        return set(), "no recording held out"
    groups = voice_groups(speakers)
    ranked = sorted(groups, key=lambda group: xxhash.xxh3_64_intdigest(f"{seed}:{group[0]}".encode()))
    cap = min(2 * target, len(speakers) - 1)
    chosen: list[list[str]] = []
    total = 0
    for group in ranked:
        if total >= target:
            break
        if total + len(group) <= cap:
            chosen.append(group)
            total += len(group)
    if not chosen:
        if len(groups) == 1:
            why = (f"all {len(speakers)} labelled recordings are linked by shared speaker names (speakers named per "
                   "recording, or every recording drawn from one pool of voices)")
        else:
            why = (f"none of the {len(groups)} groups of recordings that share no speaker with the others is small "
                   f"enough (the smallest has {min(map(len, groups))} of {len(speakers)} labelled recordings; at most "
                   f"{cap} may validate)")
        return None, why
    return {rec for group in chosen for rec in group}, (
        f"{len(chosen)} of {len(groups)} groups of recordings that share no speaker with the others")
