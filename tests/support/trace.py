"""mailhook's trace field in relayed mail: what the next hop got, with it taken off, is what
mailhook received (or wrote)."""

from __future__ import annotations

import re

# "Received: by <hostname> (mailhook); <date>", folded before the date when long.
TRACE_FIELD = re.compile(rb"Received: by [^ \r\n]+ \(mailhook\);(?: |\r\n\t)[^\r\n]+\r\n")


def untraced(content: bytes) -> bytes:
    """The relayed message without the one trace field mailhook put on top (which must be
    there)."""
    found = TRACE_FIELD.match(content)
    assert found is not None, f"no mailhook trace field on top: {content[:120]!r}"
    return content[found.end():]
