"""The condition of the SQLite store's file, as the store thread sees it: still the file that
was opened (a deleted or replaced file would otherwise swallow every write), writable, its last
write done. Each change of condition is logged once, at error level while it is failing; a lost
file's contents are copied beside it while this process still has them open.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

log = logging.getLogger("mailhook.store")


class StoreFile:
    """The store file at ``path`` and what is wrong with it, if anything."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file opened
        self.lost = ""  # why the file opened is no longer the store's: kept until a restart
        self.failing = ""  # why the last write failed; cleared by one that works
        self.unwritable = ""  # why the file will not open for writing after a restart
        self._reported = ""  # the condition last logged, so that each change is logged once

    def opened(self) -> None:
        """The file was opened now: remember which one it is."""
        self._identity = _identity(os.stat(self.path))

    def same(self) -> bool:
        """Is the file at the path still the one opened (a cheap look, on any thread)?"""
        try:
            return self._identity is None or _identity(os.stat(self.path)) == self._identity
        except OSError:
            return False

    def check(self, db: sqlite3.Connection | None) -> None:
        """Note whether the file at the store's path is still the one opened, and writable;
        ``db`` (the open database) is copied aside when it is not."""
        if self._identity is None:
            return  # in memory, or not opened yet
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            found = None
        except OSError as exc:
            self.unwritable = f"cannot look at the store file {self.path}: {exc.strerror or exc}"
            self._report()
            return
        if found is None or _identity(found) != self._identity:
            what = "deleted" if found is None else "replaced by another file"
            self.lose(f"the store file {self.path} was {what} while mailhook had it open", db)
            return
        folder = os.path.dirname(os.path.abspath(self.path))
        writable = os.access(self.path, os.W_OK) and os.access(folder, os.W_OK | os.X_OK)
        # Writes still go through the open file, but after a restart the store would not open.
        self.unwritable = "" if writable else (
            f"the store file {self.path} or its folder is not writable by mailhook")
        self._report()

    def lose(self, reason: str, db: sqlite3.Connection | None) -> None:
        """The store's file is gone: refuse from now on, and save what this process still has."""
        if self.lost:
            return
        rescued = self._rescue(db)
        self.lost = f"{reason}; {rescued}" if rescued else reason
        self._report()

    def wrote(self, error: sqlite3.Error | None) -> None:
        """A write ended, with ``error`` or without."""
        failing = f"the last write to the store failed: {error}" if error else ""
        if failing != self.failing:
            self.failing = failing
            self._report()

    def _rescue(self, db: sqlite3.Connection | None) -> str:
        """Copy the database this process still has open beside the lost file; what was done."""
        if db is None:
            return ""
        target = f"{self.path}.rescued-{time.strftime('%Y%m%dT%H%M%S')}"
        try:
            Path(target).parent.mkdir(parents=True, exist_ok=True)  # the whole folder may be gone
            copy = sqlite3.connect(target)
            try:
                db.backup(copy)
            finally:
                copy.close()
        except (OSError, sqlite3.Error) as exc:
            return f"its contents could not be saved to {target}: {exc}"
        return f"its contents were saved to {target}: put that back and restart mailhook"

    def _report(self) -> None:
        """Log the store's condition when it changed: at error level while it is failing."""
        problem = self.lost or self.failing or self.unwritable
        if problem == self._reported:
            return
        if problem:
            log.error("store: %s", problem)
        else:
            log.warning("store: %s works again", self.path)
        self._reported = problem


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino
