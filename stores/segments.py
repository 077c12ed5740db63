"""The speaker turn, the one annotation type every layer passes around (RTTM, labels, DER, RTTM output)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Segment:
    """One speaker turn: ``start`` and ``duration`` in seconds."""

    start: float
    duration: float
    speaker: str

    @property
    def end(self) -> float:
        return self.start + self.duration
