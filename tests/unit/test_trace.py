"""mailhook's trace field and the count of its own in a message's header section."""

from __future__ import annotations

from datetime import UTC, datetime
from unittest.mock import patch

from hypothesis import given
from hypothesis import strategies as st

from mailhook.core import trace
from mailhook.core.trace import header_section, own_hops, trace_header

WHEN = datetime(2031, 3, 3, 10, 0, tzinfo=UTC)


def test_long_host_name_folds_before_the_date():
    """A trace field too long for 78 octets is folded before the date and still counted."""
    name = "mail-filter-01.datacentre.example.org"
    field = trace_header(name, WHEN)
    assert field.endswith(b"\r\n") and field.count(b"\r\n\t") == 1
    assert all(len(line) <= 78 for line in field.split(b"\r\n"))
    assert own_hops(field * 2 + b"Subject: x\r\n\r\nbody\r\n", name) == 2


def test_only_the_header_section_counts():
    """A trace field quoted in the body (a forwarded message) is not counted."""
    field = trace_header("mailhook.test", WHEN)
    message = field + b"Subject: x\r\n\r\n" + field * 4
    assert own_hops(message, "mailhook.test") == 1


def test_the_field_names_the_instant_in_the_clocks_own_zone():
    """Two clocks giving the same second in different zones get each its own date, not one
    shared field."""
    from datetime import timedelta, timezone

    east = WHEN.astimezone(timezone(timedelta(hours=3)))
    assert b"+0000" in trace_header("mailhook.test", WHEN)
    assert b"+0300" in trace_header("mailhook.test", east)
    assert trace_header("mailhook.test", WHEN.replace(microsecond=999)) == trace_header(
        "mailhook.test", WHEN)


@given(st.text(alphabet="ab\r\n", max_size=40).map(lambda text: text.encode("ascii")),
       st.integers(min_value=1, max_value=45))
def test_the_header_section_ends_at_the_first_blank_line_of_either_kind(content: bytes, scan: int):
    """The header section ends where the first CRLF CRLF or LF LF begins, whichever is first,
    within the first SCAN_OCTETS of the message."""
    with patch.object(trace, "SCAN_OCTETS", scan):
        found = header_section(content)
    looked_at = content[:scan]
    ends = [at for at in (looked_at.find(b"\r\n\r\n"), looked_at.find(b"\n\n")) if at >= 0]
    assert found == (looked_at[:min(ends)] if ends else looked_at)
