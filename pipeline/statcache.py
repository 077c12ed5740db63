"""A per-machine cache of file content hashes keyed by (path, size, mtime_ns, inode).

Hashing is cheap but reading every byte of a large corpus is not; an unchanged
file is never read again. A renamed or moved file misses the cache once, is
hashed, and then finds its features in the store by content.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from agencerdas.stores import hash_file


def default_cache_path() -> Path:
    """``$AGENCERDAS_CACHE_DIR/stat-cache.json`` (default ``~/.cache/agencerdas``)."""
    base = os.environ.get("AGENCERDAS_CACHE_DIR") or Path.home() / ".cache" / "agencerdas"
    return Path(base) / "stat-cache.json"


class StatCache:
    """Content hashes of local files, trusted while size, mtime and inode are unchanged."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else default_cache_path()
        self.hits = self.misses = 0
        try:
            self._entries: dict[str, list] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self._entries = {}  # a missing or damaged cache only costs re-hashing

    def content_hash(self, path: Path) -> str:
        """xxh3-128 of the file's bytes, from the cache when the file's stat is unchanged."""
        stat = os.stat(path)
        signature = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        name = str(Path(path).resolve())
        cached = self._entries.get(name)
        if cached and cached[:3] == signature:
            self.hits += 1
            return cached[3]
        self.misses += 1
        digest = hash_file(path)
        self._entries[name] = [*signature, digest]
        return digest

    def save(self) -> None:
        """Write the cache atomically; concurrent runs may each write, the last one wins."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_text(json.dumps(self._entries))
            os.replace(tmp, self.path)
        except OSError:
            pass  # the cache is an optimisation; a read-only home must not fail the run
