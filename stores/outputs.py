"""Where the commands write, checked before any work starts: every path may be someone's data.

An output directory must be a directory (or creatable as one), writable, and outside any feature
store (a store's ``gc`` owns what lies inside it). A training run's directory has its own rules on top
(``training.rundir.check_run_dir``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import AgencerdasError
from .layout import find_store_root


def output_dir(path: Path, flag: str) -> Path:
    """``path`` if this command may create and write files in it, else AgencerdasError naming ``flag``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AgencerdasError(f"{flag} {path} is a file; give a directory for the outputs")
    _check_creatable(path, flag)
    store = find_store_root(path)
    if store is not None:
        raise AgencerdasError(f"{flag} {path} lies inside the feature store {store}, whose gc may delete it; "
                              "give a directory outside the store")
    return path


def output_file(path: Path, flag: str) -> Path:
    """``path`` if this command may write it as a file (its directory creatable, no directory in its place,
    an existing file writable)."""
    path = Path(path)
    if path.is_dir():
        raise AgencerdasError(f"{flag} {path} is a directory; give a file name")
    _check_creatable(path.parent, flag)
    if path.exists() and not os.access(path, os.W_OK):
        raise AgencerdasError(f"{flag} {path} exists and is not writable by this user")
    return path


def _check_creatable(path: Path, flag: str) -> None:
    """The nearest existing ancestor of ``path`` (or ``path`` itself) is a writable directory."""
    existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise AgencerdasError(f"{flag} {path}: {existing} is a file, so the directory cannot be created there")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise AgencerdasError(f"{flag} {path}: {existing} is not writable by this user")
