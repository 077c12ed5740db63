"""Pretrained components that work offline, from weights shipped inside registry packages.

* ``GE2E``: resemblyzer's GE2E speaker encoder (256-d), weights from the ``resemblyzer`` wheel.
* ``TorchScriptEncoder``: a user's own encoder file, waveform (B, samples) at 16 kHz -> (B, E).
* ``load_encoder("ge2e" | PATH)``: either, as a ``SpeakerEncoder``.
* ``SileroVAD``: Silero VAD 6 speech probabilities every 32 ms and speech regions.

Imports torch, numpy and librosa, and ``agencerdas.stores`` for its errors; nothing of the
trainer's. docs/pretrained.md describes the interfaces and the export of other encoders.
"""

from .encoder import SpeakerEncoder, load_encoder
from .ge2e import GE2E
from .torchscript import TorchScriptEncoder
from .vad import SileroVAD, SpeechRules, regions_from_probabilities

__all__ = ["GE2E", "SileroVAD", "SpeakerEncoder", "SpeechRules", "TorchScriptEncoder", "load_encoder", "regions_from_probabilities"]
