"""Preprocessing: find recordings and annotations, decode, resample, log-mel, frame labels,
and write them through ``stores`` in parallel. Never imports ``training`` or torch."""

from .features import FeatureConfig, LogMel
from .labels import LabelConfig, frame_labels
from .rttm import Segment, format_rttm, parse_rttm, parse_uem, rttm_safe, write_rttm
from .runner import FeaturesRequest, RunSummary, build_features

__all__ = [
    "FeatureConfig",
    "FeaturesRequest",
    "LabelConfig",
    "LogMel",
    "RunSummary",
    "Segment",
    "build_features",
    "format_rttm",
    "frame_labels",
    "parse_rttm",
    "parse_uem",
    "rttm_safe",
    "write_rttm",
]
