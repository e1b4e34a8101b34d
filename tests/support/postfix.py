"""A private Postfix instance for end-to-end tests: its own config, queue and mailboxes.

It follows docs/postfix.md: local submission (sendmail → pickup) goes through the mailhook
content filter, mailhook hands mail back to a re-injection smtpd with no filter, and Postfix
delivers to virtual mailboxes (Maildir) under the instance's folder. Needs root (Postfix
starts as root and drops to its own user), nothing of the system's Postfix config is touched.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

MAILBOX_OWNER = "nobody"  # virtual(8) delivers as this user; it must not be root


def available() -> str:
    """Why a Postfix instance cannot run here, or "" when it can."""
    if shutil.which("postfix") is None or shutil.which("sendmail") is None:
        return "Postfix is not installed (CI installs it: .ci/run)"
    if os.geteuid() != 0:
        return "starting Postfix needs root"
    return ""


class PostfixInstance:
    """Postfix with mailhook as the content filter of local submission."""

    def __init__(
        self, filter_port: int, reinject_port: int, submission_port: int, mailboxes: list[str]
    ) -> None:
        self.filter_port = filter_port
        self.reinject_port = reinject_port
        self.submission_port = submission_port  # SMTP submission, filtered like sendmail's
        self.mailboxes = mailboxes
        # Postfix's own user must reach the queue: not under pytest's private (0700) tmp folders.
        self.base = Path(tempfile.mkdtemp(prefix="mailhook-postfix-"))
        self.base.chmod(0o755)
        self.config = self.base / "etc"
        self.maildir = self.base / "mail"

    def start(self) -> PostfixInstance:
        for folder in (self.config, self.base / "spool", self.base / "data", self.maildir):
            folder.mkdir(parents=True)
        owner = pwd.getpwnam(MAILBOX_OWNER)
        os.chown(self.maildir, owner.pw_uid, owner.pw_gid)
        os.chown(self.base / "data", pwd.getpwnam("postfix").pw_uid, -1)
        (self.config / "main.cf").write_text(self._main_cf(owner.pw_uid, owner.pw_gid))
        (self.config / "master.cf").write_text(self._master_cf())
        started = self.postfix("start", check=False)
        if started.returncode != 0:
            # Say why (postfix-script's own words and the maillog), then try once more: a port
            # another test had just closed can still be in the kernel's hands for a moment.
            print(f"postfix start failed: {started.stdout}{started.stderr}\n{self.log()}")
            time.sleep(1)
            again = self.postfix("start", check=False)
            if again.returncode != 0:
                raise AssertionError(f"postfix start failed twice: {again.stdout}{again.stderr}"
                                     f"\n{self.log()}")
        return self

    def stop(self) -> None:
        self.postfix("stop", check=False)
        shutil.rmtree(self.base, ignore_errors=True)

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["postfix", "-c", str(self.config), *args], capture_output=True,
                              text=True, timeout=60, check=check)

    def sendmail(self, sender: str, recipients: list[str], message: bytes) -> None:
        """Submit a message the way a local program does (sendmail → postdrop → pickup)."""
        subprocess.run(["sendmail", "-C", str(self.config), "-f", sender, "-i", *recipients],
                       input=message, check=True, timeout=60, capture_output=True)

    def delivered(self, mailbox: str, count: int = 1, timeout: float = 60) -> list[bytes]:
        """Wait until ``count`` messages are in the mailbox's Maildir; return them."""
        new = self.maildir / mailbox / "new"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            files = sorted(new.glob("*")) if new.is_dir() else []
            if len(files) >= count:
                return [path.read_bytes() for path in files]
            time.sleep(0.1)
        raise AssertionError(f"{mailbox}: {count} message(s) not delivered in {timeout}s\n"
                             + self.log())

    def log(self) -> str:
        path = self.base / "maillog"
        return path.read_text(errors="replace") if path.exists() else "(no maillog)"

    def _main_cf(self, uid: int, gid: int) -> str:
        boxes = ", ".join(f"{{{address}={address.split('@')[0]}/}}" for address in self.mailboxes)
        domains = sorted({address.split("@")[1] for address in self.mailboxes})
        return f"""\
compatibility_level = 3.6
queue_directory = {self.base / "spool"}
data_directory = {self.base / "data"}
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.mailhook.test
mydomain = mailhook.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtp_dns_support_level = disabled
maillog_file = {self.base / "maillog"}
maillog_file_prefixes = {self.base}
virtual_mailbox_domains = {" ".join(domains)}
virtual_mailbox_base = {self.maildir}
virtual_mailbox_maps = inline:{{ {boxes} }}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
smtputf8_enable = yes
"""

    def _master_cf(self) -> str:
        services = [
            "pickup unix n - n 60 1 pickup\n"
            f"  -o content_filter=mailhook:[127.0.0.1]:{self.filter_port}",
            f"127.0.0.1:{self.submission_port} inet n - n - - smtpd\n"
            "  -o syslog_name=postfix/submission\n"
            f"  -o content_filter=mailhook:[127.0.0.1]:{self.filter_port}\n"
            "  -o smtpd_relay_restrictions=permit_mynetworks,reject",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "local unix - n n - - local",
            "virtual unix - n n - - virtual",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
            # The filter transport and the re-injection smtpd, as docs/postfix.md shows them.
            "mailhook unix - - n - 10 smtp\n"
            "  -o smtp_send_xforward_command=yes\n"
            "  -o disable_mime_output_conversion=yes\n"
            "  -o smtp_generic_maps=\n"
            "  -o smtp_data_done_timeout=1200s",
            f"127.0.0.1:{self.reinject_port} inet n - n - 10 smtpd\n"
            "  -o syslog_name=postfix/mailhook-reinject\n"
            "  -o content_filter=\n"
            "  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,"
            "no_milters,no_address_mappings\n"
            "  -o smtpd_helo_restrictions=\n"
            "  -o smtpd_client_restrictions=\n"
            "  -o smtpd_sender_restrictions=\n"
            "  -o smtpd_relay_restrictions=permit_mynetworks,reject\n"
            "  -o smtpd_recipient_restrictions=permit_mynetworks,reject\n"
            "  -o mynetworks=127.0.0.0/8\n"
            "  -o smtpd_authorized_xforward_hosts=127.0.0.0/8",
        ]
        return "\n".join(services) + "\n"


class MilterPostfixInstance(PostfixInstance):
    """Postfix with mailhook as its milter: no content filter, no re-injection; both SMTP
    submission (``smtpd_milters``) and local submission (``non_smtpd_milters``) go through it,
    as docs/milter.md shows."""

    def __init__(self, milter_port: int, submission_port: int, mailboxes: list[str]) -> None:
        super().__init__(0, 0, submission_port, mailboxes)
        self.milter = f"inet:127.0.0.1:{milter_port}"

    def _main_cf(self, uid: int, gid: int) -> str:
        return super()._main_cf(uid, gid) + (
            f"smtpd_milters = {self.milter}\n"
            f"non_smtpd_milters = {self.milter}\n"
            "milter_default_action = tempfail\n"
            "milter_protocol = 6\n"
            # Short retries, so that a deferred invitation is tried again within the test.
            "minimal_backoff_time = 5s\nmaximal_backoff_time = 10s\nqueue_run_delay = 5s\n")

    def _master_cf(self) -> str:
        services = super()._master_cf().split("\n# filter\n")[0]
        kept = [line for line in services.splitlines() if "content_filter=mailhook" not in line]
        return "\n".join(kept) + "\n"

    def postqueue(self, *args: str) -> str:
        return subprocess.run(["postqueue", "-c", str(self.config), *args], capture_output=True,
                              text=True, timeout=60, check=False).stdout

    def waiting(self) -> int:
        """How many messages Postfix keeps to try again: deferred, or (a local submission a
        milter refused for now) still in the maildrop queue that pickup retries."""
        folders = [self.base / "spool" / name for name in ("deferred", "maildrop")]
        return sum(1 for folder in folders if folder.is_dir()
                   for path in folder.rglob("*") if path.is_file())


MAILBOXES = ["alice@example.com", "bob@example.com", "zoe@example.net"]
PLAIN = (b"From: carol@example.org\r\nTo: bob@example.com\r\nSubject: lunch\r\n"
         b"Message-ID: <lunch-1@example.org>\r\n\r\nNoon?\r\n")


@pytest.fixture
def postfix_ready() -> None:
    """Skip (or, in CI, fail) when a private Postfix instance cannot be started here."""
    reason = available()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI must run the Postfix test: {reason}")
    if reason:
        pytest.skip(reason)


def serve_mailhook(folder: Path, standin_url: str, secret: str, front: str,
                   relay_port: int) -> subprocess.Popen[str]:
    """`mailhook serve` for a private Postfix instance, logging to ``folder/mailhook.log``.
    ``front`` is the config's front-end part: an ``[smtp]`` listener (the content filter) or
    ``[smtp] enabled = false`` with a ``[milter]`` socket."""
    config = folder / "mailhook.toml"
    config.write_text(f"""{front.strip()}
[relay]
port = {relay_port}
[trueconf]
server_url = "{standin_url}"
client_id = "mailhook"
client_secret = "{secret}"
[policy]
local_domains = ["example.com"]
[store]
path = "{folder / 'state.sqlite3'}"
[metrics]
enabled = false
""")
    log = (folder / "mailhook.log").open("w")
    root = Path(__file__).resolve().parents[2]
    return subprocess.Popen([sys.executable, "-m", "mailhook", "serve", "--config", str(config)],
                            cwd=root, stdout=log, stderr=subprocess.STDOUT, text=True)


def milter_front(port: int) -> str:
    """The front-end part of the config for a milter-only mailhook on ``port``."""
    return f'[smtp]\nenabled = false\n[milter]\nlisten = "inet:127.0.0.1:{port}"\n'
