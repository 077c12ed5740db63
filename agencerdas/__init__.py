"""agencerdas: speaker-diarization training on a content-addressed Zarr feature store.

The Python API (the console script ``agencerdas`` is :mod:`.cli`; ``python -m agencerdas`` runs it too)::

    from agencerdas import Diarizer, train
    diarizer = Diarizer.from_checkpoint("runs/optimized/best.pt")
    annotation = diarizer("meeting.wav")          # pyannote.core.Annotation
    history = train(store="store", view="default", out="runs/mine", preset="optimized", overrides=["EPOCHS=3"])

Importing the package has no side effects and loads neither torch nor librosa: each name is
imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agencerdas.inference.api import Diarizer
    from agencerdas.training.api import train

__all__ = ["Diarizer", "train"]


def __getattr__(name: str) -> Any:
    if name == "Diarizer":
        from agencerdas.inference.api import Diarizer

        return Diarizer
    if name == "train":
        from agencerdas.training.api import train

        return train
    raise AttributeError(f"module 'agencerdas' has no attribute {name!r}")
