"""Hostile text against every scan of message content: each finishes in time linear in its input.

The inputs are a few hundred KiB, built so that a pattern which backtracks over the rest of
the text from every candidate start takes tens of seconds; a linear scan takes milliseconds.
The bound of one second is generous for a loaded machine.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TypeVar

from hypothesis import given
from hypothesis import strategies as st

from mailhook.core import blocks
from mailhook.core.mime import parse_message
from mailhook.core.model import LinkInsertion
from mailhook.core.rewrite import MAX_READABLE_BYTES, rewrite_message
from mailhook.frontends.smtp import _PLAIN_PATH
from tests.support import reliability
from tests.support.invites import Event, exchange, thunderbird

URL = "https://video.example.com/c/0123456789"
BOUND = 1.0  # seconds
T = TypeVar("T")

OPENER_LINES = (blocks.PLAIN_START + "\r\n") * 12_000  # 12,000 openers, no closer: 375 KiB
HTML_OPENERS = blocks.HTML_START * 15_000  # 15,000 start markers, no end marker: 470 KiB


def timed(work: Callable[..., T], *args: object) -> tuple[T, float]:
    """The result of ``work(*args)`` and the seconds it took."""
    start = time.perf_counter()
    result = work(*args)
    return result, time.perf_counter() - start


# --- the link blocks --------------------------------------------------------------------------


def test_plain_block_lookup_is_linear_in_opener_lines():
    """Opener lines without a closer get the block appended, in linear time."""
    inserted, seconds = timed(blocks.insert_plain_block, OPENER_LINES, URL)
    assert seconds < BOUND
    assert inserted.startswith(OPENER_LINES) and inserted.rstrip().endswith(blocks.PLAIN_END)
    removed, seconds = timed(blocks.remove_plain_block, OPENER_LINES)
    assert seconds < BOUND and removed == OPENER_LINES
    reliability.hostile("12,000 plain block opener lines")


def test_plain_block_lookup_is_linear_after_an_opener():
    """One opener before long lines of spaces and short runs of "~" is scanned once."""
    text = blocks.PLAIN_START + "\n" + (" " * 200 + "\n" + "~" * 9 + "\n") * 2_000
    inserted, seconds = timed(blocks.insert_plain_block, text, URL)
    assert seconds < BOUND and inserted.count(blocks.PLAIN_START) == 2
    reliability.hostile("plain block opener before padding lines")


def test_html_block_lookup_is_linear_in_start_markers():
    """Start markers without an end marker get the block appended, in linear time."""
    inserted, seconds = timed(blocks.insert_html_block, HTML_OPENERS, URL)
    assert seconds < BOUND and inserted.startswith(HTML_OPENERS)
    assert inserted.endswith(blocks.HTML_END)
    removed, seconds = timed(blocks.remove_html_block, HTML_OPENERS)
    assert seconds < BOUND and removed == HTML_OPENERS
    reliability.hostile("15,000 HTML block start markers")


def test_html_block_goes_before_the_last_of_many_body_ends():
    """Among many "</body>" fragments the block goes before the last one."""
    markup = "</body\t>" * 60_000 + "<p>x</p></BODY >"
    inserted, seconds = timed(blocks.insert_html_block, markup, URL)
    assert seconds < BOUND
    assert inserted == markup[:-8] + blocks.html_block(URL) + "</BODY >"
    reliability.hostile("60,000 </body> fragments")


# The one-pattern definition of a block that the scans replace; it is the reference on small text.
PLAIN_DEFINITION = re.compile(
    r"^[ \t]*~+ TrueConf ~+[ \t]*\r?\n.*?^[ \t]*~{10,}[ \t]*(?=\r?$)", re.MULTILINE | re.DOTALL
)
HTML_DEFINITION = re.compile(re.escape(blocks.HTML_START) + ".*?" + re.escape(blocks.HTML_END),
                             re.DOTALL)
PIECES = ["~", "~" * 10, " ", "\t", "\r", "\n", "\r\n", " TrueConf ", "x", blocks.PLAIN_START,
          blocks.PLAIN_END, blocks.HTML_START, blocks.HTML_END, "<!-- mailhook:trueconf:"]


@given(st.lists(st.sampled_from(PIECES), max_size=14).map("".join))
def test_blocks_are_found_where_the_definition_finds_them(text):
    """A block is replaced exactly where the single-pattern definition finds one, else kept."""
    newline = "\r\n" if "\r\n" in text else "\n"
    plain = PLAIN_DEFINITION.search(text)
    if plain:
        block = blocks.plain_block(URL).replace("\n", newline)
        expected = text[: plain.start()] + block + text[plain.end() :]
        assert blocks.insert_plain_block(text, URL) == expected
    else:
        assert blocks.remove_plain_block(text) == text
    html = HTML_DEFINITION.search(text)
    if html:
        block = blocks.html_block(URL)
        expected = text[: html.start()] + block + text[html.end() :]
        assert blocks.insert_html_block(text, URL) == expected
    else:
        assert blocks.remove_html_block(text) == text


# --- whole messages ---------------------------------------------------------------------------


def test_invitation_full_of_block_markers_is_rewritten_in_time():
    """Markers in the body, DESCRIPTION and X-ALT-DESC: the link is written within the bound."""
    event = Event(
        description="\\n".join([blocks.PLAIN_START] * 12_000),
        extra=("X-ALT-DESC;FMTTYPE=text/html:" + HTML_OPENERS,),
    )
    raw = thunderbird(event).replace(
        b"You have been invited to Quarterly planning.", OPENER_LINES.encode()
    )
    rewritten, seconds = timed(_rewrite, raw)
    assert seconds < 2 * BOUND
    assert rewritten.count(b"CONFERENCE;VALUE=URI") == 2  # inline and attached copy
    assert rewritten.count(URL.encode()) > 2
    reliability.hostile("invitation with block markers in body, DESCRIPTION and X-ALT-DESC")


def test_html_invitation_full_of_start_markers_is_rewritten_in_time():
    """An HTML body of start markers without an end marker gets the block within the bound."""
    raw = exchange(Event()).replace(
        b"<html><body><p>Let's meet.</p></body></html>", HTML_OPENERS.encode()
    )
    rewritten, seconds = timed(_rewrite, raw)
    assert seconds < BOUND and blocks.HTML_END.encode() in rewritten
    reliability.hostile("HTML body of 15,000 block start markers")


def test_text_body_over_the_cap_keeps_no_block():
    """A text body over MAX_READABLE_BYTES is left as it is; the calendar copies get the link."""
    body = ("word " * 15 + "\r\n").encode() * (MAX_READABLE_BYTES // 77 + 1)
    raw = thunderbird(Event()).replace(b"You have been invited to Quarterly planning.", body)
    rewritten = _rewrite(raw)
    assert b"8bit\r\n\r\n" + body + b"\r\n\r\n--Boundary_(ID_inner)" in rewritten  # as it came
    assert rewritten.count(b"CONFERENCE;VALUE=URI") == 2


def _rewrite(raw: bytes) -> bytes:
    parsed = parse_message(raw)
    assert parsed.calendar is not None, parsed.skip_reason
    return rewrite_message(parsed, LinkInsertion(URL))


# --- header fields ----------------------------------------------------------------------------


def test_long_line_of_encoded_word_starts_is_left_undecoded():
    """A Subject line of 14,000 unterminated encoded words is read in time and kept as sent."""
    subject = "=?utf-8?q?a" * 14_000  # 150 KiB on one line
    raw = thunderbird(Event()).replace(b"Invitation: Quarterly planning", subject.encode(), 1)
    parsed, seconds = timed(parse_message, raw)
    assert seconds < BOUND
    assert parsed.calendar is not None and parsed.subject == subject
    reliability.hostile("Subject of 14,000 unterminated encoded words")


def test_folded_encoded_subject_is_still_decoded():
    """Encoded words folded onto lines of ordinary length are decoded as before."""
    words = "\r\n ".join(["=?utf-8?b?0J/RgNC40LPQu9Cw0YjQtdC90LjQtQ==?="] * 40)
    raw = thunderbird(Event()).replace(b"Invitation: Quarterly planning", words.encode(), 1)
    assert parse_message(raw).subject == "Приглашение" * 40


def test_content_type_with_endless_parameters_is_read_in_time():
    """A calendar part whose Content-Type holds an open quote and 130,000 ";" is read in time."""
    padding = b'; x="' + b";" * 130_000
    raw = thunderbird(Event()).replace(b"method=REQUEST; charset=UTF-8",
                                       b"method=REQUEST" + padding, 1)
    parsed, seconds = timed(parse_message, raw)
    assert seconds < BOUND
    assert parsed.calendar is not None and parsed.calendar.method == "REQUEST"
    reliability.hostile("Content-Type with an open quote and 130,000 parameter separators")


def test_multipart_with_endless_parameters_is_passed_over():
    """A multipart whose Content-Type is too costly to read is not split: it passes unchanged."""
    raw = thunderbird(Event()).replace(b'boundary="Boundary_(ID_outer)"',
                                       b'boundary="Boundary_(ID_outer)"; x="' + b";" * 130_000, 1)
    parsed, seconds = timed(parse_message, raw)
    assert seconds < BOUND and parsed.calendar is None and parsed.skip_reason == "no calendar"
    reliability.hostile("multipart Content-Type with an open quote and 130,000 separators")


# --- SMTP arguments ---------------------------------------------------------------------------


def test_plain_path_pattern_gives_up_in_linear_time():
    """The MAIL/RCPT quick path refuses a padded argument with a line break in linear time.

    aiosmtpd hands over command lines without their line break, so this guards the pattern
    itself for any other caller.
    """
    argument = "<alice@example.com> SIZE=1" + " \t" * 40_000 + "\n"
    found, seconds = timed(_PLAIN_PATH.fullmatch, argument)
    assert found is None and seconds < BOUND
    assert _PLAIN_PATH.fullmatch("<alice@example.com> SIZE=1" + " \t" * 40_000)
