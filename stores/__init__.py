"""Content-addressed Zarr feature store: keys, atomic entries, dataset views, window reads, and the
small types every layer shares (the error type, the speaker turn).

Imports neither ``pipeline`` nor ``training``.
"""

from .errors import AgencerdasError
from .keys import FORMAT_VERSION, content_key, feature_key, hash_file, label_key
from .layout import find_store_root
from .options import parse_storage_options
from .arrays import ArraySpec, default_codec
from .maintenance import VerifyReport
from .segments import Segment
from .store import Store
from .views import DatasetView, ViewRecording, load_view, referenced_keys, save_view, speakers_per_recording
from .windows import EntryReader, downsample_features, downsample_labels, downsample_mask, read_rows

__all__ = [
    "AgencerdasError",
    "ArraySpec",
    "DatasetView",
    "EntryReader",
    "FORMAT_VERSION",
    "Segment",
    "Store",
    "VerifyReport",
    "ViewRecording",
    "content_key",
    "default_codec",
    "downsample_features",
    "downsample_labels",
    "downsample_mask",
    "feature_key",
    "find_store_root",
    "hash_file",
    "label_key",
    "load_view",
    "parse_storage_options",
    "read_rows",
    "referenced_keys",
    "save_view",
    "speakers_per_recording",
]
