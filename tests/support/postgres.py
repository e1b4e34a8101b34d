"""A PostgreSQL server of the tests' own: initdb and pg_ctl in a temporary folder.

It uses the server binaries of the Debian package (/usr/lib/postgresql/<version>/bin) or any
on PATH. PostgreSQL refuses to run as root, so under root (as in CI) the server runs as the
``postgres`` user through ``runuser``. It listens on a free loopback port with password
(SCRAM) authentication, and on a unix socket in its folder.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

SUPERUSER = "mailhook"


def find_binaries() -> Path | None:
    """The folder with initdb and pg_ctl, the newest version first; None when there is none."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                        key=lambda p: _version(p.parent.name), reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


def why_not_available() -> str:
    """Why the PostgreSQL tests cannot run here ("" when they can)."""
    if find_binaries() is None:
        return ("no PostgreSQL server binaries (initdb, pg_ctl) found in /usr/lib/postgresql/*/bin "
                "or on PATH: install the postgresql package")
    if os.geteuid() == 0 and (shutil.which("runuser") is None or not _user_exists("postgres")):
        return "running as root, and there is no postgres user (or runuser) to run PostgreSQL as"
    return ""


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder, started and stopped by the tests."""

    def __init__(self, durable: bool = False) -> None:
        binaries = find_binaries()
        if binaries is None:
            raise RuntimeError(why_not_available())
        self.bin = binaries
        self.durable = durable  # fsync and full-page writes on, as in production
        self.root = Path(tempfile.mkdtemp(prefix="mailhook-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.host = "127.0.0.1"
        self._as_postgres = os.geteuid() == 0
        self._databases = itertools.count(1)
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    # --- lifecycle ----------------------------------------------------------------------------

    def init(self) -> PostgresServer:
        password_file = self.root / "pw"
        password_file.write_text(self.password + "\n")
        if self._as_postgres:
            shutil.chown(password_file, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth-local=trust",
                  "--auth-host=scram-sha-256", f"--pwfile={password_file}", "-E", "UTF8",
                  "--no-instructions")
        password_file.unlink()
        return self

    def start(self) -> PostgresServer:
        options = [f"-p {self.port}", f"-k {self.root}", f"-h {self.host}",
                   "-c max_connections=300", "-c shared_buffers=32MB"]
        if not self.durable:
            options += ["-c fsync=off", "-c full_page_writes=off", "-c synchronous_commit=off"]
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data),
                  "-l", str(self.root / "server.log"), "-o", " ".join(options))
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server ("fast": sessions are ended; "immediate": as if it crashed)."""
        self._run("pg_ctl", "stop", "-w", "-t", "60", "-D", str(self.data), "-m", mode)

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.root, timeout=120)

    # --- databases ----------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """A connection URI without the password (give it apart, as mailhook does)."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}?sslmode=disable"

    def new_database(self) -> str:
        """A new, empty database; its URI."""
        name = f"test_{os.getpid()}_{next(self._databases)}"
        with psycopg.connect(self.url(), password=self.password, autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        return self.url(name)

    def log(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")
        except OSError:
            return ""
