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
_PLAIN_BLOCK = re.compile(
    r"^[ \t]*~+ TrueConf ~+[ \t]*\r?\n.*?^[ \t]*~{10,}[ \t]*(?=\r?$)", re.MULTILINE | re.DOTALL
)
_HTML_BLOCK = re.compile(re.escape(HTML_START) + r".*?" + re.escape(HTML_END), re.DOTALL)
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


def insert_plain_block(text: str, url: str, language: str = "en") -> str:
    """Put the plain block into text: replace an existing one, else append after a blank line."""
    newline = _newline_of(text)
    block = plain_block(url, language).replace("\n", newline)
    match = _PLAIN_BLOCK.search(text)
    if match:
        return text[: match.start()] + block + text[match.end() :]
    if not text.strip():
        return block + newline if text.endswith(("\n", "\r")) else block
    trailing = newline if text.endswith(("\n", "\r")) else ""
    return text.rstrip("\r\n") + newline + newline + block + trailing


def remove_plain_block(text: str) -> str:
    """Remove the plain block (and the blank line written before it), if present."""
    match = _PLAIN_BLOCK.search(text)
    if not match:
        return text
    head = text[: match.start()].rstrip("\r\n")
    tail = text[match.end() :]
    return head + tail if head else tail.lstrip("\r\n")


def insert_html_block(markup: str, url: str, language: str = "en") -> str:
    """Put the HTML block into markup: replace an existing one, else before </body> or at the end."""
    block = html_block(url, language)
    if _HTML_BLOCK.search(markup):
        return _HTML_BLOCK.sub(lambda _m: block, markup, count=1)
    ends = list(_BODY_END.finditer(markup))
    if ends:
        at = ends[-1].start()
        return markup[:at] + block + markup[at:]
    return markup + block


def remove_html_block(markup: str) -> str:
    """Remove the HTML block, if present."""
    return _HTML_BLOCK.sub("", markup, count=1)
