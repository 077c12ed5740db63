"""How many speakers: the eigengap of the slots' affinity, with no threshold to calibrate per embedding source.

Normalised maximum eigengap spectral clustering (NME-SC; Park et al., 2019, the count rule of NeMo's
diarizer): the cosine affinity of the slot embeddings is pruned to each row's ``p`` nearest neighbours,
symmetrised, and the number of speakers is where the graph Laplacian's eigenvalues jump most. ``p`` is the
one whose largest gap is widest relative to ``p`` itself (a sparse graph with a clean gap). Two slots of
one chunk never link (their affinity is dropped before pruning), as clustering keeps them apart.
"""

from __future__ import annotations

import math

import numpy as np

#: Largest number of slots whose affinity is decomposed (each candidate ``p`` costs an O(N^3) eigen-
#: decomposition); beyond it, an evenly spaced subset of the slots estimates the count.
MAX_SLOTS = 1200
#: Candidate neighbour counts ``p`` tried, at most this many, evenly spaced in [2, N x MAX_NEIGHBOUR_SHARE]
#: (NeMo's NME-SC searches p up to 15% of N).
P_CANDIDATES = 12
MAX_NEIGHBOUR_SHARE = 0.15
#: The largest count the eigengap proposes unless ``most`` says otherwise (the gaps past a few dozen
#: eigenvalues describe the graph's fine structure, not speakers).
MAX_COUNT = 20


def _laplacian_eigenvalues(affinity: np.ndarray, p: int) -> np.ndarray:
    """Ascending eigenvalues of the unnormalised Laplacian of ``affinity`` (N, N) pruned to each row's p largest."""
    keep = np.zeros_like(affinity, dtype=bool)
    top = np.argpartition(-affinity, kth=min(p, len(affinity) - 1), axis=1)[:, :p]
    np.put_along_axis(keep, top, True, axis=1)
    keep &= np.isfinite(affinity)  # a row with fewer than p allowed neighbours links to those only
    pruned = np.where(keep, 1.0, 0.0)
    pruned = 0.5 * (pruned + pruned.T)
    laplacian = np.diag(pruned.sum(axis=1)) - pruned
    return np.linalg.eigvalsh(laplacian)


def eigengap_count(embeddings: np.ndarray, groups: np.ndarray, fewest: int = 1, most: float = math.inf) -> int:
    """Number of speakers among N slot embeddings by NME-SC, within ``[fewest, most]``.

    Args:
        embeddings: (N, E) finite, non-zero slot embeddings (scaled to unit norm here).
        groups: (N,) chunk of each slot; slots of one chunk never link, so the count is at least the
            largest number of slots in one chunk.
        fewest, most: bounds on the count (the user's min/max speakers).

    Returns:
        The count, at most N.
    """
    n = len(embeddings)
    if n <= 1:
        return n
    if n > MAX_SLOTS:  # the count, not the assignment: a regular subset of the slots estimates it
        pick = np.linspace(0, n - 1, MAX_SLOTS).round().astype(int)
        embeddings, groups, n = embeddings[pick], groups[pick], MAX_SLOTS
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    affinity = x @ x.T
    affinity[groups[:, None] == groups[None, :]] = -np.inf  # cannot-link: never a neighbour
    np.fill_diagonal(affinity, 1.0)
    floor = max(int(fewest), int(np.bincount(np.unique(groups, return_inverse=True)[1]).max()))
    ceiling = int(min(most, MAX_COUNT, n - 1))
    if floor > ceiling:
        return min(floor, n)
    best_ratio, count = math.inf, floor
    for p in sorted({int(v) for v in np.linspace(2, max(2, n * MAX_NEIGHBOUR_SHARE), P_CANDIDATES).round()}):
        eigenvalues = _laplacian_eigenvalues(affinity, p)
        gaps = np.diff(eigenvalues[: ceiling + 1])
        gaps[: floor - 1] = -np.inf  # counts below the floor are not allowed
        k = int(gaps.argmax()) + 1
        # NME: the widest gap relative to the spectrum's scale, against how dense the pruned graph is.
        ratio = (p / n) / (gaps[k - 1] / max(eigenvalues[-1], 1e-12) + 1e-12)
        if ratio < best_ratio:
            best_ratio, count = ratio, k
    return int(min(max(count, floor), ceiling))
