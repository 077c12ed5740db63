"""Power-loss durability on a local filesystem: fsync what a commit makes visible, as databases do.

A rename is atomic against a crash of the process (kill -9), not against a power cut:
without fsync the kernel may persist the new directory entry before the data it names,
so after a reboot a committed-looking entry can hold empty or truncated files. A commit
therefore fsyncs every file and directory it is about to expose, renames, then fsyncs
the directory that now holds the new name. Object storage needs none of this: a PUT
that returned is durable.
"""

from __future__ import annotations

import errno
import os


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the entries of directory ``path`` (creations, renames, removals in it) durable.

    A filesystem that cannot fsync a directory (EINVAL: some FUSE and network mounts)
    offers nothing stronger to ask for, so that case is not an error.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike) -> None:
    """fsync every file under directory ``path``, then every directory, deepest first, ``path`` last."""
    for directory, _, files in os.walk(path, topdown=False):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(directory)


def write_file(path: str | os.PathLike, data: bytes, durable: bool) -> None:
    """Create ``path`` holding ``data``; with ``durable``, its bytes are on disk before this returns.

    The caller links or renames it into place and then fsyncs that directory.
    """
    with open(path, "wb") as handle:
        handle.write(data)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())


def make_dirs(path: str | os.PathLike, durable: bool) -> None:
    """``os.makedirs(path, exist_ok=True)``; with ``durable``, each directory it creates is
    recorded durably in its parent (a renamed-in entry is lost if its parent's own entry is)."""
    path = os.path.abspath(path)
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except FileExistsError:  # another writer created it meanwhile, maybe not durably yet
            if not os.path.isdir(directory):
                raise
        if durable:
            fsync_dir(os.path.dirname(directory))
