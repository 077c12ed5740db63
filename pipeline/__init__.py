"""Preprocessing: find recordings and annotations, decode, resample, log-mel, frame labels,
and write them through ``stores`` in parallel. Never imports ``training`` or torch.

Names are imported on first use, so a process that needs only ``pipeline.rttm`` (writing
RTTM after inference, say) does not load librosa and joblib.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FeatureConfig": "features",
    "LogMel": "features",
    "LabelConfig": "labels",
    "frame_labels": "labels",
    "format_rttm": "rttm",
    "parse_rttm": "rttm",
    "parse_uem": "rttm",
    "rttm_safe": "rttm",
    "write_rttm": "rttm",
    "FeaturesRequest": "runner",
    "RunSummary": "runner",
    "build_features": "runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
