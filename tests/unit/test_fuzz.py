"""Property-based tests over MIME trees and iCalendar input, through the real pipeline.

TrueConf is reached through the real client over an in-memory transport, so every message
that asks for a conference gets one and is rewritten.
"""

from __future__ import annotations

import asyncio
import base64
import quopri
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mailhook.app import wall_clock
from mailhook.core.decide import Action, Policy
from mailhook.core.envelope import Inbound
from mailhook.core.mime import MimePart, scan_message
from mailhook.core.plan import FlowConfig
from mailhook.handling import Handling
from mailhook.store import SqliteStore
from mailhook.trueconf.client import TrueConfClient
from mailhook.trueconf.directory import LocalPartDirectory
from tests.support import reliability

URL = "https://video.example.com/c/4000000001"
TEXTISH = {"text/plain", "text/html", "text/calendar", "application/ics"}


def _answer(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("/token"):
        return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
    if request.method == "GET":
        return httpx.Response(200, json={"cnt": 0, "conferences": []})
    return httpx.Response(200, json={"conference": {"id": "4000000001", "url": URL}})


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Iterator:
    """Run a message through one message handling on one event loop; yields the runner."""
    loop = asyncio.new_event_loop()
    store = SqliteStore(str(tmp_path_factory.mktemp("fuzz") / "store.sqlite3"))
    client = TrueConfClient("https://video.example.com", "id", "secret",
                            transport=httpx.MockTransport(_answer))
    policy = Policy(local_domains=("example.com",), trigger="always")
    handling = Handling.on(FlowConfig(policy, notices=False), store, client,
                           LocalPartDirectory(("example.com",)), wall_clock)

    def process(raw: bytes):
        return loop.run_until_complete(
            handling.process(Inbound("alice@example.com", ("bob@example.com",), raw)))

    yield process
    loop.run_until_complete(store.close())
    loop.run_until_complete(client.aclose())
    loop.close()


# --- strategies ------------------------------------------------------------------------------

text_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
# Weighted towards invitations mailhook acts on, so that rewrites are exercised often.
methods = st.sampled_from(["REQUEST"] * 6 + ["CANCEL", "REPLY", "PUBLISH", "COUNTER", "", "request"])


@st.composite
def calendars(draw) -> str:
    """An iCalendar object, valid or not, with hostile text in its properties."""
    method = draw(methods)
    uid = draw(st.sampled_from(["u1@example.com"] * 4 + ["", "u2", "x;y:z"]))
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0"]
    if method:
        lines.append(f"METHOD:{method}")
    lines += ["BEGIN:VEVENT", f"UID:{uid}",
              "ORGANIZER:mailto:" + draw(st.sampled_from(["alice@example.com"] * 4
                                                         + ["eve@other.example"])),
              "ATTENDEE:mailto:bob@example.com",
              "DTSTART:" + draw(st.sampled_from(["20310101T100000Z"] * 4
                                                + ["20310101", "garbage", ""])),
              "DTEND:20310101T110000Z"]
    for name in draw(st.lists(st.sampled_from(["SUMMARY", "LOCATION", "DESCRIPTION",
                                               "X-ALT-DESC;FMTTYPE=text/html", "RRULE",
                                               "STATUS", "SEQUENCE"]), max_size=5)):
        value = draw(text_values).replace("\r", "\\r").replace("\n", "\\n")
        lines.append(f"{name}:{value}")
    if draw(st.integers(0, 5)):
        lines.append("END:VEVENT")
    lines.append("END:VCALENDAR")
    eol = draw(st.sampled_from(["\r\n", "\n"]))
    return eol.join(lines) + eol


def encode(body: bytes, cte: str) -> bytes:
    """A body in the given Content-Transfer-Encoding (or broken on purpose)."""
    if cte == "base64":
        return base64.encodebytes(body).replace(b"\n", b"\r\n")
    if cte == "quoted-printable":
        return quopri.encodestring(body).replace(b"\n", b"\r\n")
    if cte == "broken-base64":
        return b"@@@not base64!!\r\n"
    return body


@st.composite
def leaves(draw) -> bytes:
    """One non-multipart part: text, HTML, calendar, binary or a forwarded message."""
    kind = draw(st.sampled_from(["text/plain", "text/html", "text/calendar", "text/calendar",
                                 "application/ics", "application/octet-stream", "message/rfc822",
                                 "image/png"]))
    cte = draw(st.sampled_from(["7bit", "8bit", "8bit", "base64", "quoted-printable", "BASE64",
                                "broken-base64"]))
    charset = draw(st.sampled_from(["utf-8", "iso-8859-1", "koi8-r", "windows-1251", "bogus"]))
    if kind in ("text/calendar", "application/ics"):
        body = draw(calendars()).encode("utf-8")
    elif kind == "message/rfc822":
        body = b"Subject: fwd\r\n\r\n" + draw(calendars()).encode("utf-8")
        cte = "7bit"
    elif kind in ("text/plain", "text/html"):
        body = draw(text_values).encode(charset if charset != "bogus" else "utf-8", "replace")
    else:
        body = draw(st.binary(max_size=80))
    method = draw(st.sampled_from(["", "; method=REQUEST", "; method=cancel"]))
    head = f"Content-Type: {kind}; charset={charset}{method}\r\nContent-Transfer-Encoding: {cte}\r\n"
    if draw(st.booleans()):
        head += "Content-Disposition: attachment; filename=invite.ics\r\n"
    if draw(st.booleans()):
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + encode(body, cte)


def multiparts(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A multipart around generated children."""

    @st.composite
    def build(draw) -> bytes:
        subtype = draw(st.sampled_from(["mixed", "mixed", "alternative", "alternative", "related",
                                        "signed", "report"]))
        boundary = draw(st.sampled_from(["b1", "=_Part_0", "Boundary_(ID_x)", "b:b"])) + str(
            draw(st.integers(0, 999)))
        parts = draw(st.lists(children, min_size=0, max_size=4))
        out = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode()
        out += b"preamble\r\n" if draw(st.booleans()) else b""
        for part in parts:
            out += f"--{boundary}\r\n".encode() + part + b"\r\n"
        if draw(st.booleans()):
            out += f"--{boundary}--\r\n".encode()
        return out

    return build()


trees = st.recursive(leaves(), multiparts, max_leaves=8)


@st.composite
def messages(draw) -> bytes:
    """A whole message: top headers and a generated body tree."""
    head = (b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: fuzz\r\n"
            b"Message-ID: <fuzz@example.com>\r\nMIME-Version: 1.0\r\n")
    return head + draw(trees)


# --- properties ------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(raw=messages())
def test_pipeline_never_raises_and_passes_byte_identical(run, raw):
    """Any MIME tree: processing never raises; what is not rewritten is forwarded byte-identical."""
    reliability.bad_input("generated MIME tree")
    outcome = run(raw)
    assert outcome.content is not None
    if outcome.decision.action is Action.PASS or outcome.url == "":
        assert outcome.content == raw


@FUZZ
@given(raw=messages())
def test_rewrite_touches_only_calendars_and_text_bodies(run, raw):
    """Every part other than calendar objects and text bodies is byte-identical after a rewrite."""
    outcome = run(raw)
    event("rewritten" if outcome.content != raw else "unchanged")
    if outcome.content == raw:
        return
    before = {p.path: p for p in scan_message(raw).root.walk()}
    after = {p.path: p for p in scan_message(outcome.content).root.walk()}
    assert before.keys() == after.keys()
    for path, part in before.items():
        if part.is_multipart or part.content_type in TEXTISH:
            continue
        assert _bytes(raw, part) == _bytes(outcome.content, after[path])


def _bytes(raw: bytes, part: MimePart) -> bytes:
    return raw[part.header_start:part.body_end]


@FUZZ
@given(data=st.data())
def test_mutated_real_messages_never_crash(run, data, message_bytes):
    """Random byte damage to real-shaped invitations never crashes and never loses the message."""
    name = data.draw(st.sampled_from(["exchange_online.eml", "google.eml", "thunderbird.eml",
                                      "outlook2007.eml", "apple_mail.eml", "exchange_cdo.eml"]))
    raw = bytearray(message_bytes(name))
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if action == "flip":
            raw[position] = data.draw(st.integers(0, 255))
        elif action == "delete":
            del raw[position]
        else:
            raw[position:position] = data.draw(st.binary(min_size=1, max_size=4))
    reliability.bad_input("mutated message")
    outcome = run(bytes(raw))
    assert outcome.content is not None
    if outcome.url == "":
        assert outcome.content == bytes(raw)
