"""Store maintenance: ``verify`` (every committed entry against its checksums, every leftover) and
``gc`` (leftovers of crashes and entries no view names, after a grace period).

:class:`Maintenance` is a mixin of :class:`stores.store.Store`: it uses the store's
listing, commit-marker and removal primitives and adds no state.
"""

from __future__ import annotations

import os
import time
from contextlib import suppress
from dataclasses import dataclass, field

from .arrays import check_array
from .errors import AgencerdasError
from .generations import stale_generations
from .layout import COMMIT, KINDS, is_marker_tmp, is_tmp_entry, is_view_tmp

#: ``gc`` leaves ``_tmp/`` orphans and temporary view files younger than this alone by default:
#: they may be writes still in progress in another process (``verify`` reports them whatever their age).
TMP_MIN_AGE_S = 3600.0


@dataclass
class VerifyReport:
    """What ``Store.verify`` found: committed entries checked and every problem by path."""

    checked: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def ok(self) -> bool:
        return not self.problems


class Maintenance:
    """``verify`` and ``gc`` over the primitives of :class:`~stores.store.Store` (``root``, ``local``, ``fs``,
    ``_listing``, ``_scan``, ``_commit``, ``_group``, ``_path``, ``_remove``, ``keys``)."""

    def _leftovers(self) -> list[tuple[str, str]]:
        """Paths that no reader trusts: ``_tmp`` orphans, temporary view and marker files, groups
        without a commit marker, and (object storage) generations their entry's marker does not name.
        Only names of the layout's shapes count (:mod:`.layout`); anything else is left alone.

        A constant number of listings, whatever the number of entries (:meth:`_scan` per kind); a
        marker is read only where an entry holds more than itself and one generation.
        """
        found = [(p, "orphan of an interrupted write") for p in self._listing(f"{self.root}/_tmp") if is_tmp_entry(p)]
        found += [(p, "interrupted view write") for p in self._listing(f"{self.root}/views") if is_view_tmp(p)]
        found += [(p, "interrupted store creation") for p in self._listing(self.root) if is_marker_tmp(p)]
        for kind in KINDS:
            for name, inside in sorted(self._scan(kind).items()):
                path = f"{self.root}/{kind}/{name}"
                if COMMIT not in inside:
                    found.append((path, "partial entry without commit marker"))
                elif not self.local and len(inside) > 2:  # local entries arrive whole by rename, with no generations
                    try:
                        commit = self._commit(path)
                    except AgencerdasError:
                        continue  # verify reports the damaged marker itself
                    if commit is None:  # its marker went since the scan (a concurrent gc): what is left is partial
                        found.append((path, "partial entry without commit marker"))
                    elif commit.get("data"):  # generations other than the committed one: a raced or killed writer's
                        found += [(p, "write of a committed entry that did not commit")
                                  for p in stale_generations([f"{path}/{n}" for n in sorted(inside)], commit["data"])]
        return found

    def verify(self, checksums: bool = True) -> VerifyReport:
        """Check every committed entry against its commit manifest and list leftovers.

        With ``checksums``, every array is read back in chunk-sized blocks and its
        xxh3 compared with the one recorded at commit time.
        """
        report = VerifyReport(problems=self._leftovers())
        for kind in KINDS:
            for key in self.keys(kind):
                report.checked += 1
                path = self._path(kind, key)
                try:
                    commit = self._commit(path) or {}  # one read: the manifest and where the arrays are
                    group = self._group(path, commit)
                    for name, expected in commit["arrays"].items():
                        problem = check_array(group[name], expected, checksums)
                        if problem:
                            report.problems.append((f"{path}/{name}", problem))
                except Exception as exc:  # any failure to read a committed entry is a finding, not a crash
                    report.problems.append((path, f"unreadable: {type(exc).__name__}: {exc}"))
        return report

    def gc(self, keep: set[str] | None = None, dry_run: bool = False, min_age_s: float = TMP_MIN_AGE_S) -> list[str]:
        """Remove leftovers and, when ``keep`` is given, committed entries whose key is not in it.

        ``keep`` is usually :meth:`referenced_keys` (every entry some view names).
        ``_tmp/`` orphans and temporary view or marker files may be writes still in progress
        in another process, and an unreferenced entry may have been committed by a ``features``
        run that has not written its view yet: only those unchanged for ``min_age_s`` seconds go
        (0: all of them), a grace period like git's for unreachable objects. On object storage
        writers write generations inside the entry, so the same holds for partial entries and
        for generations that commit.json does not name.
        Returns the removed (or, with ``dry_run``, removable) paths.
        """
        doomed = [path for path, reason in self._leftovers()
                  if (self.local and reason.startswith("partial entry")) or self._idle_s(path) >= min_age_s]
        if keep is not None:
            unreferenced = [self._path(kind, key) for kind in KINDS for key in self.keys(kind) if key not in keep]
            doomed += [path for path in unreferenced if self._idle_s(f"{path}/{COMMIT}") >= min_age_s]
        if dry_run:
            return doomed
        removed = []
        for path in doomed:
            with suppress(FileNotFoundError):  # a concurrent gc, or the writer's own rename, got there first
                self._remove(path)
                removed.append(path)
        return removed

    def _idle_s(self, path: str) -> float:
        """Seconds since anything at or under ``path`` last changed (infinite when storage cannot tell)."""
        newest = 0.0
        if self.local:
            if not os.path.lexists(path):
                return 0.0  # renamed into place (or removed) since it was listed: nothing to collect
            for dirpath, _, filenames in os.walk(path):
                for name in [dirpath, *(os.path.join(dirpath, f) for f in filenames)]:
                    with suppress(OSError):
                        newest = max(newest, os.lstat(name).st_mtime)
            with suppress(OSError):
                newest = max(newest, os.lstat(path).st_mtime)
        else:
            try:
                for name in self.fs.find(path) or [path]:
                    newest = max(newest, self.fs.modified(name).timestamp())
            except FileNotFoundError:
                return 0.0  # gone since it was listed
            except (NotImplementedError, OSError, ValueError, AttributeError):
                return float("inf")
        return time.time() - newest if newest else float("inf")
