"""The link in the organizer's own calendar: after the invitation went on, mailhook finds the
organizer's event on a CalDAV server by UID and writes in (or, after a deletion, takes out)
the same CONFERENCE, LOCATION and DESCRIPTION lines the invitation got.

Best effort and asynchronous: it runs after the mail was answered, is retried a few times
with a growing pause, and is counted in ``mailhook_caldav_writebacks_total{result}``:

- ``ok``: the event was written; ``unchanged``: it already was as it should be;
- ``conflict``: the event kept changing on the server while mailhook wrote it (every PUT
  carries ``If-Match`` with the ETag read, so a concurrent edit is never overwritten);
- ``not_found``: no calendar under the organizer's home holds the UID;
- ``error``: the server failed, refused, or was unreachable after every try.

The ``caldav`` library is synchronous: each write-back runs on a worker thread with a client
of its own. It is imported there, on first use: it and what it pulls in (an HTTP client, an
XML parser) take some 30 MB that a daemon without ``[caldav]`` should not carry. The service
account's password never reaches a log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import quote

from mailhook import logfmt
from mailhook.config import CalDAVSettings
from mailhook.core.model import LinkInsertion
from mailhook.core.organizer_event import changes, with_link, without_link
from mailhook.metrics import Metrics

log = logging.getLogger("mailhook.caldav")
Edit = Callable[[str], str]
FIRST_PAUSE = 1.0  # seconds before the first retry; doubled for each one after it
# The library blocks; it runs on threads of its own, so a slow CalDAV server never holds up
# the threads that parse and plan messages. Past MAX_PENDING write-backs waiting, new ones are
# dropped (and counted) rather than kept in memory without end.
THREADS = 2
MAX_PENDING = 1000
CALENDAR_TYPE = "text/calendar; charset=utf-8"


class WriteBackError(Exception):
    """The server answered a request with an error (the message names no secret)."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """The organizer's event as the server keeps it."""

    url: str
    text: str
    etag: str


class CalendarHome:
    """One organizer's calendars on the server (synchronous, like the library)."""

    def __init__(self, client: Any, url: str) -> None:
        self._client = client
        self.url = url

    def find(self, uid: str) -> StoredEvent | None:
        """The event with this UID in any calendar under the home (a calendar-query REPORT
        per calendar); None when there is none, or no such home."""
        from caldav.collection import CalendarSet
        from caldav.lib.error import NotFoundError

        try:
            # The library types its calls for both its sync and async clients; this is the sync one.
            calendars: Any = CalendarSet(client=self._client, url=self.url).calendars()
        except NotFoundError:
            return None
        for calendar in calendars:
            try:
                found: Any = calendar.object_by_uid(uid)
            except NotFoundError:
                continue
            stored = self.read(str(found.url))
            if stored is not None:
                return stored
        return None

    def read(self, url: str) -> StoredEvent | None:
        """The event at ``url`` with its ETag (None when it is gone)."""
        response = self._client.request(url, "GET")
        if response.status == 404:
            return None
        _check(response, "GET")
        return StoredEvent(url, _text(response.raw), response.headers.get("ETag", ""))

    def replace(self, stored: StoredEvent, text: str) -> bool:
        """Write the event if it is still the version read; False when it changed since."""
        headers = {"If-Match": stored.etag, "Content-Type": CALENDAR_TYPE}
        response = self._client.put(stored.url, text, headers)
        if response.status == 412:
            return False
        _check(response, "PUT")
        return True


def _check(response: Any, method: str) -> None:
    if not 200 <= response.status < 300:
        raise WriteBackError(f"{method} answered {response.status} {response.reason or ''}")


def _text(raw: str | bytes) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def write_back(home: CalendarHome, uid: str, edit: Edit, attempts: int) -> str:
    """Edit the organizer's event on the server; the result (see the module docstring).

    Each PUT carries the ETag read; when the event changed in between, it is read again and
    the edit made on the new version, up to ``attempts`` times.
    """
    for _ in range(attempts):
        stored = home.find(uid)
        if stored is None:
            return "not_found"
        if not stored.etag or stored.etag.startswith("W/"):
            raise WriteBackError("the server gave no strong ETag for the event")
        text = edit(stored.text)
        changed = changes(stored.text, text)
        if changed.other:
            raise WriteBackError("the edit would change more than the link's properties")
        if not changed.link:
            return "unchanged"
        if home.replace(stored, text):
            return "ok"
        log.info("uid=%s: the organizer's event changed on the server; reading it again", uid)
    return "conflict"


class CalendarWriteBack:
    """Schedules write-backs after the mail was answered, retries them, counts them."""

    def __init__(self, section: CalDAVSettings, insertion: LinkInsertion,
                 metrics: Metrics) -> None:
        self._section = section
        self._insertion = insertion  # its url is replaced by each conference's
        self._metrics = metrics
        self._password = section.password()
        logfmt.redact(self._password)  # behind the rule that no log line quotes a request
        self._tasks: set[asyncio.Task[None]] = set()
        self._threads = ThreadPoolExecutor(THREADS, thread_name_prefix="mailhook-caldav")

    def after(self, organizer: str, uid: str, link: str) -> None:
        """The invitation went out: write ``link`` into the organizer's event (take the
        link out when it is "": the conference was deleted). Returns at once."""
        if len(self._tasks) >= MAX_PENDING:
            self._metrics.caldav_writebacks.labels("dropped").inc()
            log.warning("uid=%s: %d CalDAV write-backs already waiting; this one is dropped",
                        uid, len(self._tasks))
            return
        edit = (partial(with_link, insertion=_with_url(self._insertion, link)) if link
                else without_link)
        task = asyncio.get_running_loop().create_task(self._write_back(organizer, uid, edit))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float) -> None:
        """Wait a while for the write-backs under way (at shutdown)."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _write_back(self, organizer: str, uid: str, edit: Edit) -> None:
        result, pause = "error", FIRST_PAUSE
        for attempt in range(self._section.retries + 1):
            if attempt:
                await asyncio.sleep(pause)
                pause *= 2
            try:
                result = await asyncio.get_running_loop().run_in_executor(
                    self._threads, self._once, organizer, uid, edit)
                break
            except Exception as exc:  # noqa: BLE001 - whatever the server or the network did: try again
                log.warning("uid=%s: cannot write the link into %s's event (try %d): %s",
                            uid, organizer, attempt + 1, _described(exc))
        self._metrics.caldav_writebacks.labels(result).inc()
        level = logging.INFO if result in ("ok", "unchanged") else logging.WARNING
        log.log(level, "uid=%s: organizer's event on the CalDAV server: %s", uid, result)

    def _once(self, organizer: str, uid: str, edit: Edit) -> str:
        from caldav.davclient import DAVClient

        section = self._section
        client = DAVClient(url=section.url, username=section.username or None,
                                  password=self._password or None,
                           timeout=max(1, round(section.timeout)))
        try:
            home = CalendarHome(client, section.url + home_path(section.calendar_home, organizer))
            return write_back(home, uid, edit, section.retries + 1)
        finally:
            client.close()


def home_path(template: str, organizer: str) -> str:
    """The organizer's calendar home under the server's URL, from ``calendar_home``."""
    user = organizer.rpartition("@")[0] or organizer
    path = template.format(user=quote(user, safe=""), email=quote(organizer, safe="@"))
    return path if path.startswith("/") else "/" + path


def _with_url(insertion: LinkInsertion, url: str) -> LinkInsertion:
    return LinkInsertion(url=url, keywords=insertion.keywords, language=insertion.language)


def _described(exc: Exception) -> str:
    """A short account of a failure for the log: the first line, never a request's headers."""
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def build_writeback(section: CalDAVSettings, keywords: tuple[str, ...], language: str,
                    metrics: Metrics) -> CalendarWriteBack | None:
    """The write-back the settings ask for; None when it is off or cannot work (logged)."""
    if not section.enabled:
        return None
    if not section.url:
        log.error("caldav.enabled is set but caldav.url is empty: no write-back")
        return None
    # Loaded now, at start-up, rather than by the first write-back, which would hold the
    # interpreter while it loads.
    import caldav.collection
    import caldav.davclient  # noqa: F401

    try:
        insertion = LinkInsertion(url="", keywords=keywords, language=language)
        return CalendarWriteBack(section, insertion, metrics)
    except OSError as exc:
        log.error("cannot read caldav.password_file (%s): no write-back",
                  exc.strerror or type(exc).__name__)
        return None
