"""The SQLite store's file format: the schema's migrations (by ``PRAGMA user_version``; the
steps are in schema.py, shared with PostgreSQL) and the note that tells a store that went
missing from one never made. Events are written as rows and read back as rows.py says.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from mailhook.store import schema
from mailhook.store.rows import event_from_row, to_row, upsert_sql

# Row functions are shared with the other backend (rows.py); they are used from here too.
__all__ = ["MIGRATIONS", "event_from_row", "mark_created", "migrate", "missing", "prepare",
           "to_row", "upsert_sql"]

log = logging.getLogger("mailhook.store")


# Each entry moves the schema one version up (see schema.py); never edit one once released.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = tuple(
    step.sqlite for step in schema.MIGRATIONS
)


def migrate(db: sqlite_utils.Database) -> int:
    """Bring the schema to the newest version; return that version.

    The steps run in one transaction that holds SQLite's write lock from its start, so two
    processes opening the store together never both migrate it: the second waits, then finds
    the work done.
    """
    if _version(db) == len(MIGRATIONS):
        return len(MIGRATIONS)
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        version = _version(db)
        for step in MIGRATIONS[version:]:
            step(db)
        db.conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
    except BaseException:
        db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")
    return len(MIGRATIONS)


def _version(db: sqlite_utils.Database) -> int:
    return int(db.conn.execute("PRAGMA user_version").fetchone()[0])


def prepare(path: str) -> str:
    """Create the store and bring its schema up to date now, before several processes open
    it; "" when done, else what went wrong. A store that went missing is not made again
    empty: the daemon reports it and holds invitations (see ``missing``)."""
    if path == ":memory:" or missing(path):
        return ""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            db = sqlite_utils.Database(conn)
            db.enable_wal()
            migrate(db)
        finally:
            conn.close()
        mark_created(path)
    except (OSError, sqlite3.Error) as exc:
        return f"{path}: {exc}"
    return ""


# --- a store that went missing ------------------------------------------------------------
# An empty store in place of a lost one would forget every conference mailhook made: a CANCEL
# would leave its conference on TrueConf and an update would make a second one. So the first
# open leaves a note beside the file, and a note without its file means "lost", not "new".

CREATED_NOTE = """\
mailhook keeps the conferences it made in {name} (created here on {when}).
While this note is here and {name} is not, mailhook does not start an empty
store (it would lose track of those conferences): invitations get 451 until
{name} is put back, from a backup or from the {name}.rescued-* copy mailhook
saves when the file disappears while it runs. To start with an empty store
on purpose, delete this note too.
"""


def created_note(path: str) -> Path:
    """The note saying a store was created at ``path``."""
    return Path(f"{path}.created")


def missing(path: str) -> str:
    """Why the store at ``path`` counts as lost ("" when it is there or was never made)."""
    if Path(path).exists() or not created_note(path).exists():
        return ""
    return (f"the store file {path} is missing (see {created_note(path)}): restore it and "
            "restart mailhook")


def mark_created(path: str) -> None:
    """Leave the note beside a store that exists (once; it is kept from then on)."""
    note = created_note(path)
    if note.exists():
        return
    when = time.strftime("%Y-%m-%d %H:%M:%S %z")
    try:
        note.write_text(CREATED_NOTE.format(name=Path(path).name, when=when))
    except OSError as exc:
        log.warning("cannot write %s: %s", note, exc.strerror or exc)
