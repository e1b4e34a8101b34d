"""A real CalDAV server for the tests: Radicale on a free loopback port, its storage in a temp
folder, a service account "mailhook" (plain htpasswd) allowed to write every calendar."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SERVICE_USER = "mailhook"
SERVICE_PASSWORD = "caldav-s3cret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Radicale:
    """``python -m radicale`` for the length of a ``with`` block."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.password_file = folder / "caldav-password"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Radicale:
        self.folder.mkdir(parents=True, exist_ok=True)
        users = self.folder / "users"
        users.write_text(f"{SERVICE_USER}:{SERVICE_PASSWORD}\n")
        self.password_file.write_text(SERVICE_PASSWORD + "\n")
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and wait until it answers."""
        command = [sys.executable, "-m", "radicale", "--config", "",
                   "--server-hosts", f"127.0.0.1:{self.port}",
                   "--storage-filesystem-folder", str(self.folder / "collections"),
                   "--auth-type", "htpasswd",
                   "--auth-htpasswd-filename", str(self.folder / "users"),
                   "--auth-htpasswd-encryption", "plain",
                   "--rights-type", "authenticated", "--logging-level", "warning"]
        log = (self.folder / "radicale.log").open("ab")
        self._process = subprocess.Popen(command, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.request("OPTIONS", self.url + "/", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("Radicale did not start; see " + str(self.folder / "radicale.log"))

    def stop(self) -> None:
        """Stop the server (the storage stays, for a restart)."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None

    # --- what a calendar client does ------------------------------------------------------

    def request(self, method: str, path: str, body: str = "",
                headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.request(method, self.url + path, content=body.encode(), headers=headers,
                             auth=(SERVICE_USER, SERVICE_PASSWORD), timeout=10)

    def make_calendar(self, user: str, name: str = "calendar") -> str:
        """The user's home and one calendar in it; the calendar's path."""
        self.request("MKCOL", f"/{user}/")
        path = f"/{user}/{name}/"
        response = self.request("MKCALENDAR", path)
        assert response.status_code == 201, response.text
        return path

    def put(self, path: str, text: str) -> str:
        """Store a calendar object as a client would; its new ETag."""
        response = self.request("PUT", path, text, {"Content-Type": "text/calendar"})
        assert response.status_code in (201, 204), response.text
        return self.get(path)[1]

    def get(self, path: str) -> tuple[str, str]:
        """A calendar object's text and ETag."""
        response = self.request("GET", path)
        assert response.status_code == 200, response.text
        return response.text, response.headers["etag"]
