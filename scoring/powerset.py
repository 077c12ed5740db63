"""Powerset speaker sets: the classes of a powerset model and decisions without a threshold.

A powerset model (Plaquet & Bredin, 2023) has one output class per set of at most K
simultaneous speakers among its S slots, e.g. S=4, K=2: the empty set, 4 single speakers
and 6 pairs, 11 classes. This module is torch-free: training builds its head and loss
from :func:`powerset_sets`, and inference decides from stitched per-speaker marginals.
"""

from __future__ import annotations

import itertools

import numpy as np


def powerset_sets(speakers: int, max_overlap: int) -> np.ndarray:
    """(P, S) uint8: row c is class c's set of active speakers, the empty set first, then the sets of
    one speaker, of two, ... up to ``max_overlap``, each in lexicographic order."""
    if speakers < 1 or not 1 <= max_overlap <= speakers:
        raise ValueError(f"need 1 <= max_overlap <= speakers, got {max_overlap} and {speakers}")
    rows = [combo for size in range(max_overlap + 1) for combo in itertools.combinations(range(speakers), size)]
    sets = np.zeros((len(rows), speakers), dtype=np.uint8)
    for c, combo in enumerate(rows):
        sets[c, list(combo)] = 1
    return sets


def powerset_decisions(posteriors: np.ndarray, max_overlap: int) -> np.ndarray:
    """(n, S) bool: per frame, the most probable set of at most ``max_overlap`` speakers under the
    per-speaker marginals ``posteriors`` (n, S) in [0, 1] (taken as independent): no threshold.

    On one window a powerset model's marginals are near 0 or 1 and this is its argmax class;
    after stitching (overlapping windows averaged per speaker) it is the set they agree on.
    """
    p = np.clip(np.asarray(posteriors, dtype=np.float64), 1e-7, 1 - 1e-7)
    sets = powerset_sets(p.shape[1], min(max_overlap, p.shape[1])).astype(np.float64)
    score = np.log(p) @ sets.T + np.log1p(-p) @ (1.0 - sets).T  # (n, P) log-probability of each set
    return sets[score.argmax(axis=1)].astype(bool) if len(p) else np.zeros(p.shape, dtype=bool)
