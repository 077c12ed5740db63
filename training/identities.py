"""Speaker identities of the train split: one number per person the labels name, for every batch path.

A batch's ``speakers`` (B, S) says which identity each label column holds, so a speaker-embedding
loss can tell the same voice in two windows. The numbering is made once from the view (no store
reads), in the train split's order, so it is the same on every DDP rank and after a resume; the
streamed path, the device-resident path and the simulated conversations all read it from here.
"""

from __future__ import annotations

import numpy as np

from agencerdas.stores import ViewRecording

#: The identity of a column that holds nobody: silent in its window, pseudo-labelled, or unknown.
NO_IDENTITY = -1


def number_speakers(recordings: list[ViewRecording], speaker_ids: str) -> tuple[list[np.ndarray], int]:
    """Per recording, the identity of each of its label columns, and how many identities there are.

    Args:
        recordings: the train split, in its order; a recording's columns are its ``speakers``
            (the labels entry's column names, first appearance first).
        speaker_ids: ``recording``: each (recording, speaker) is an identity, numbered in recording
            then column order; ``global``: each RTTM speaker name is one identity across recordings,
            numbered by first appearance in that order.

    Returns:
        ``(table, count)``: table[i] int64 (len(recordings[i].speakers),), in [0, count), or all
        :data:`NO_IDENTITY` for a pseudo-labelled or unlabelled recording (its clusters are guesses).
    """
    numbers: dict[object, int] = {}
    table = []
    for index, rec in enumerate(recordings):
        if rec.pseudo or not rec.labels:
            table.append(np.full(len(rec.speakers), NO_IDENTITY, dtype=np.int64))
            continue
        keys = [name if speaker_ids == "global" else (index, column) for column, name in enumerate(rec.speakers)]
        table.append(np.array([numbers.setdefault(key, len(numbers)) for key in keys], dtype=np.int64))
    return table, len(numbers)


def column_identities(identities: np.ndarray | None, columns: int) -> np.ndarray:
    """(columns,) int64: ``identities`` (a recording's row of :func:`number_speakers`, None: unknown)
    fitted to the width of its stored labels, :data:`NO_IDENTITY` for columns it does not name."""
    out = np.full(columns, NO_IDENTITY, dtype=np.int64)
    if identities is not None:
        n = min(columns, len(identities))
        out[:n] = identities[:n]
    return out
