"""Names and versions of the store layout, shared by the writer, the readers and maintenance, and
:func:`find_store_root`, which tells whether a local path lies inside a store.

Maintenance touches only names of the shapes this module defines (:func:`is_entry_name` and the
temporary-name tests): anything else under a store, such as a run directory someone put inside
it, is neither reported nor collected.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
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


#: A content key (xxh3-128, :func:`stores.keys.content_key`): the name of every entry folder.
_ENTRY_NAME = re.compile(r"[0-9a-f]{32}")
#: ``_tmp/<kind>-<key>-<generation>``: an entry being written on a local filesystem (:meth:`Store.write`).
_TMP_ENTRY_NAME = re.compile(r"(?:features|labels)-[0-9a-f]{32}-[0-9a-z]+")
#: ``views/<name>.json.<8 hex>.tmp``: a view being written (:meth:`Store.put_json`).
_VIEW_TMP_NAME = re.compile(r".+\.json\.[0-9a-f]{8}\.tmp")


def _base(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def is_entry_name(name: str) -> bool:
    """Whether ``name`` is a content key, the name of an entry folder under ``features/`` or ``labels/``."""
    return _ENTRY_NAME.fullmatch(name) is not None


def is_tmp_entry(path: str) -> bool:
    """Whether ``path`` (under ``_tmp/``) is named like an entry being written."""
    return _TMP_ENTRY_NAME.fullmatch(_base(path)) is not None


def is_view_tmp(path: str) -> bool:
    """Whether ``path`` (under ``views/``) is named like a view being written."""
    return _VIEW_TMP_NAME.fullmatch(_base(path)) is not None


def find_store_root(path: str | os.PathLike) -> Path | None:
    """The local store directory that ``path`` is or lies inside (resolved, absolute), or None.

    A store is recognised as :class:`stores.Store` recognises one: a ``store.json`` whose ``format``
    is ``agencerdas-store``. ``path`` need not exist (an output directory about to be created);
    symlinks are resolved, so a link into a store counts as inside it. For callers that must not
    write into a store (training runs, RTTM output): its maintenance never looks at their files.
    """
    try:
        here = Path(path).expanduser().resolve()
    except (OSError, RuntimeError):  # a symlink loop: judge the path as written
        here = Path(path).expanduser().absolute()
    for directory in (here, *here.parents):
        try:
            info = json.loads((directory / "store.json").read_bytes())
        except (OSError, ValueError):  # none here, unreadable, a directory, or not JSON: not a store's marker
            continue
        if isinstance(info, dict) and info.get("format") == STORE_FORMAT:
            return directory
    return None


def is_plain_name(name: Any) -> bool:
    """Whether ``name`` is a single path component (no separators, not hidden)."""
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def is_marker_tmp(path: str) -> bool:
    """Whether ``path`` is the temporary file of a store.json being created."""
    name = _base(path)
    return name.startswith(MARKER_TMP) and name.endswith(".tmp")


def committed_names(scan: dict[str, set[str]]) -> list[str]:
    """Sorted names of the entries of a scan (entry name → names inside it) that hold a commit marker."""
    return sorted(name for name, inside in scan.items() if COMMIT in inside)
