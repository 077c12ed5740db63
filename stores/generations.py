"""Object-storage generations: how writers of one key on S3 (or any store without rename) never mix.

Rename is a copy on object storage, so an entry cannot be written aside and moved
into place. Instead each writer writes its arrays into its own generation folder
``<kind>/<key>/g<id>/`` and commits by writing ``<kind>/<key>/commit.json`` whose
``"data"`` names that generation; that marker is the last object written. A writer
that finds the key already committed deletes its own generation (keys are content
hashes, so both hold the same data). Generations the marker does not name are
leftovers of raced or killed writers: ``verify`` reports them and ``gc`` removes them.

Generations are store layout version 2; the first generation write to an older
object store raises its ``store.json`` so an older agencerdas refuses the store
instead of misreading (or wiping) generations.
"""

from __future__ import annotations

import json
import uuid
from contextlib import suppress

from .layout import COMMIT, STORE_FORMAT, STORE_VERSION


def new_generation() -> str:
    """A fresh generation folder name, ``g`` + 12 hex digits."""
    return f"g{uuid.uuid4().hex[:12]}"


def raise_layout(fs, root: str) -> int:
    """Mark the store at ``root`` as layout :data:`STORE_VERSION`; returns the new version."""
    fs.pipe_file(f"{root}/store.json", json.dumps({"format": STORE_FORMAT, "version": STORE_VERSION}).encode())
    return STORE_VERSION


def commit_generation(fs, entry: str, generation: str, commit: dict) -> None:
    """Make ``generation`` the committed data of ``entry`` (the marker is one atomic PUT)."""
    fs.pipe_file(f"{entry}/{COMMIT}", json.dumps({**commit, "data": generation}).encode())


def discard(fs, path: str) -> None:
    """Best-effort removal of a generation (or temporary folder); gc collects whatever is left."""
    with suppress(OSError):
        fs.rm(path, recursive=True)


def data_path(entry: str, commit: dict) -> str:
    """Where the arrays of a committed entry are: the generation its marker names, or the entry itself."""
    return f"{entry}/{commit['data']}" if commit.get("data") else entry


def stale_generations(listing: list[str], generation: str) -> list[str]:
    """Paths in an entry's ``listing`` other than its marker and its committed ``generation``."""
    return [p for p in listing if p.rsplit("/", 1)[-1] not in (COMMIT, generation)]
