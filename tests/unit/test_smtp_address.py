"""MAIL/RCPT argument parsing: the quick path for plain paths answers exactly as aiosmtpd's
full parser does, and everything unusual still goes through the full parser."""

from __future__ import annotations

import pytest
from aiosmtpd.handlers import Sink
from aiosmtpd.smtp import SMTP

from mailhook.frontends.smtp import _PLAIN_PATH, MailhookSMTP

ARGUMENTS = [
    "<alice@example.com>",
    "<alice@example.com> SIZE=100 BODY=8BITMIME",
    "<alice@example.com>  SIZE=1",
    "<alice@example.com>\tSIZE=1",
    "<alice@example.com> SIZE=1  ",
    "<alice@example.com>   ",
    " <a.b+c@x-y.example>",
    "<Alice.O'Neil@Example.COM> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@example.com",
    "<a!#$%&*+/=?^_`{|}~-z@d.example>",
    "<>",
    '<"q q"@x.com>',
    '<"a"@b.c> SIZE=5',
    "alice@example.com",
    "<a@b",
    "<@relay:a@b.c>",
    "<a@[1.2.3.4]>",
    "<a..b@c.d>",
    "<.a@c.d>",
    "<a.@c.d>",
    "<a@b.c>x",
    "<a@b.c> (comment) SIZE=1",
    "<a@b.c>(comment)",
    "<a b@c.d>",
    "<a@b..c>",
    "<a@-b.c>",
    "<@>",
    "",
    "<ünïcode@exämple.com>",
    "<a@b.c> SMTPUTF8",
]


@pytest.mark.parametrize("argument", ARGUMENTS)
def test_same_answer_as_aiosmtpd(argument: str) -> None:
    ours = MailhookSMTP.__new__(MailhookSMTP)
    theirs = SMTP(Sink())
    ours.local_part_limit = theirs.local_part_limit = 0
    assert ours._getaddr(argument) == theirs._getaddr(argument)


def test_plain_paths_take_the_quick_path() -> None:
    assert _PLAIN_PATH.fullmatch("<alice@example.com> SIZE=100")
    assert _PLAIN_PATH.fullmatch(" <a.b+c@x-y.example>")
    for unusual in ('<"q q"@x.com>', "<@relay:a@b.c>", "<a@[1.2.3.4]>", "<a@b.c> (c) X=1", "<>"):
        assert _PLAIN_PATH.fullmatch(unusual) is None, unusual


def test_local_part_limit_still_applies() -> None:
    ours = MailhookSMTP.__new__(MailhookSMTP)
    ours.local_part_limit = 3
    assert ours._getaddr("<abcd@example.com>") == (None, None)
    assert ours._getaddr("<abc@example.com>") == ("abc@example.com", "")
