"""The localized, clearly delimited link blocks written into descriptions and mail bodies.

Markers do not depend on the language, so a block written in one language is found and
replaced by an update in another.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

PLAIN_START = "~~~~~~~~~~ TrueConf ~~~~~~~~~~"
PLAIN_END = "~" * len(PLAIN_START)
HTML_START = "<!-- mailhook:trueconf:begin -->"
HTML_END = "<!-- mailhook:trueconf:end -->"
MAX_URL_LENGTH = 2048

_TEXTS = {
    "en": ("TrueConf video conference", "Join from a web browser or the TrueConf app."),
    "ru": ("Видеоконференция TrueConf", "Подключиться можно из браузера или приложения TrueConf."),
}
# A plain block is an opener line, then anything, then a line of ten or more "~". The two lines
# are looked for one after the other: one pattern with ".*?" between them would rescan the rest
# of the text from every opener line that has no closer, quadratic in a hostile body.
_PLAIN_OPENER = re.compile(r"^[ \t]*~+ TrueConf ~+[ \t]*\r?\n", re.MULTILINE)
_PLAIN_CLOSER = re.compile(r"^[ \t]*~{10,}[ \t]*(?=\r?$)", re.MULTILINE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f-\x9f\"<>\\`{}|^]")


def is_safe_url(url: str) -> bool:
    """Whether a conference URL may be written anywhere: an absolute http(s) URL, no oddities."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        return False
    if _UNSAFE_CHARS.search(url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def _texts(language: str) -> tuple[str, str]:
    return _TEXTS.get(language, _TEXTS["en"])


def plain_block(url: str, language: str = "en") -> str:
    """The plain-text block, lines joined with "\\n", without a trailing newline."""
    title, how = _texts(language)
    return "\n".join((PLAIN_START, f"{title}: {url}", how, PLAIN_END))


def html_block(url: str, language: str = "en") -> str:
    """The HTML block; every piece of text (the URL included) is escaped."""
    title, how = _texts(language)
    link = html.escape(url, quote=True)
    return (
        f'{HTML_START}<div class="mailhook-trueconf"><p>{html.escape(title)}: '
        f'<a href="{link}">{link}</a><br>{html.escape(how)}</p></div>{HTML_END}'
    )


def _newline_of(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _plain_block_span(text: str) -> tuple[int, int] | None:
    """Where the first plain block is: its opener line up to the end of its closer line.

    When the first opener has no closer after it, no later opener has one either.
    """
    opener = _PLAIN_OPENER.search(text)
    if opener is None:
        return None
    closer = _PLAIN_CLOSER.search(text, opener.end())
    return (opener.start(), closer.end()) if closer else None


def _html_block_span(markup: str) -> tuple[int, int] | None:
    """Where the first HTML block is, from its start marker to the end of its end marker."""
    start = markup.find(HTML_START)
    end = markup.find(HTML_END, start + len(HTML_START)) if start >= 0 else -1
    return (start, end + len(HTML_END)) if end >= 0 else None


def insert_plain_block(text: str, url: str, language: str = "en") -> str:
    """Put the plain block into text: replace an existing one, else append after a blank line."""
    newline = _newline_of(text)
    block = plain_block(url, language).replace("\n", newline)
    span = _plain_block_span(text)
    if span:
        return text[: span[0]] + block + text[span[1] :]
    if not text.strip():
        return block + newline if text.endswith(("\n", "\r")) else block
    trailing = newline if text.endswith(("\n", "\r")) else ""
    return text.rstrip("\r\n") + newline + newline + block + trailing


def remove_plain_block(text: str) -> str:
    """Remove the plain block (and the blank line written before it), if present."""
    span = _plain_block_span(text)
    if not span:
        return text
    head = text[: span[0]].rstrip("\r\n")
    tail = text[span[1] :]
    return head + tail if head else tail.lstrip("\r\n")


def insert_html_block(markup: str, url: str, language: str = "en") -> str:
    """Put the HTML block into markup: replace an existing one, else before </body> or at the end."""
    block = html_block(url, language)
    span = _html_block_span(markup)
    if span:
        return markup[: span[0]] + block + markup[span[1] :]
    last_end = None
    for last_end in _BODY_END.finditer(markup):  # noqa: B007 - only the last one counts; keep no list
        pass
    if last_end:
        at = last_end.start()
        return markup[:at] + block + markup[at:]
    return markup + block


def remove_html_block(markup: str) -> str:
    """Remove the HTML block, if present."""
    span = _html_block_span(markup)
    return markup[: span[0]] + markup[span[1] :] if span else markup
