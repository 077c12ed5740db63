"""Names and versions of the store layout, shared by the writer, the readers and maintenance."""

from __future__ import annotations

from typing import Any

KINDS = ("features", "labels")
COMMIT = "commit.json"
STORE_FORMAT = "agencerdas-store"
#: Layout version of the store; a reader refuses a store written by a newer one.
STORE_VERSION = 2  # 2: object-storage entries keep their arrays in the generation commit.json names
#: The layout a new store gets: local stores are unchanged since version 1, so older readers keep them.
LOCAL_VERSION = 1
#: Prefix of the temporary file a store.json is written to before it is linked into place.
MARKER_TMP = ".store.json."


def is_plain_name(name: Any) -> bool:
    """Whether ``name`` is a single path component (no separators, not hidden)."""
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def is_marker_tmp(path: str) -> bool:
    """Whether ``path`` is the temporary file of a store.json being created."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.startswith(MARKER_TMP) and name.endswith(".tmp")


def committed_names(scan: dict[str, set[str]]) -> list[str]:
    """Sorted names of the entries of a scan (entry name → names inside it) that hold a commit marker."""
    return sorted(name for name, inside in scan.items() if COMMIT in inside)
