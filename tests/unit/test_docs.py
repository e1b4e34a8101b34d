"""The documentation covers every command and links every page."""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

from mailhook.cli import _parser

ROOT = Path(__file__).resolve().parents[2]


def commands() -> list[str]:
    """Every command and sub-command of the CLI, e.g. "conferences show"."""
    found = []

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    has_children = any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
                    if has_children:
                        walk(sub, f"{prefix}{name} ")
                    else:
                        found.append(f"{prefix}{name}")

    walk(_parser(), "")
    return found


def test_readme_and_operations_guide_list_every_command():
    """Each command appears in the README's command table and admin commands in docs/operations.md."""
    readme = (ROOT / "README.md").read_text()
    operations = (ROOT / "docs" / "operations.md").read_text()
    for command in commands():
        assert f"`mailhook {command}" in readme, command
    for command in ("check", "conferences list", "conferences show", "conferences delete",
                    "reschedule", "version"):
        assert f"`mailhook {command}" in operations, command


def test_docs_index_is_linked_and_links_every_page():
    """The README links docs/index.md, which links every page in docs/ and the changelog."""
    assert "(docs/index.md)" in (ROOT / "README.md").read_text()
    index = (ROOT / "docs" / "index.md").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "index.md":
            assert f"({page.name})" in index, page.name
    assert "(../CHANGELOG.md)" in index


def test_changelog_follows_keep_a_changelog():
    """CHANGELOG.md has an Unreleased section and dated or numbered releases with change types."""
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "Keep a Changelog" in text and "## [Unreleased]" in text
    sections = re.findall(r"^### (\w+)$", text, re.MULTILINE)
    assert sections and set(sections) <= {"Added", "Changed", "Deprecated", "Removed", "Fixed",
                                          "Security"}


def test_metrics_guide_names_every_metric():
    """docs/operations.md describes every metric mailhook exports."""
    from mailhook.metrics import Metrics

    operations = (ROOT / "docs" / "operations.md").read_text()
    for family in Metrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in operations, name


def test_oauth_setup_names_menus_permissions_per_version_and_the_check():
    """docs/trueconf.md gives both menu paths, the permissions for v3 and v4, how to choose
    api_version and the check of the users permission that `mailhook check` makes."""
    from mailhook.admin import check_trueconf_users  # the check the page describes

    page = (ROOT / "docs" / "trueconf.md").read_text()
    for fact in ("API → OAuth2", "Web → Security → OAuth 2.0", "client credentials",
                 "`conferences:read`", "`conferences:write`", "`users:read`", '`"v3.11"`',
                 '`"v4"`', "5.5.3", "`trueconf users`", "403 forbidden"):
        assert fact in page, fact
    assert "(docs/trueconf.md)" in (ROOT / "README.md").read_text()
    assert check_trueconf_users.__doc__


SERVICE = re.compile(r"^(\S+)\s+(inet|unix|unix-dgram|fifo|pass)\s+(.*)$")


def master_cf_entries(text: str) -> dict[str, tuple[list[str], list[str]]]:
    """The master.cf entries in a text: service name -> (columns after the type, -o options)."""
    entries: dict[str, tuple[list[str], list[str]]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if match := SERVICE.match(line):
            columns, current = match.group(3).split(), []
            entries[match.group(1)] = (columns, current)
        elif current is not None and line.strip().startswith("-o "):
            current.append(line.strip()[3:])
        else:
            current = None
    return entries


def master_cf_under_test() -> dict[str, tuple[list[str], list[str]]]:
    """The entries the end-to-end test's Postfix runs, with the documented ports."""
    import shutil

    from tests.support.postfix import PostfixInstance

    instance = PostfixInstance(filter_port=10025, reinject_port=10026, submission_port=587,
                               mailboxes=["bob@example.com"])
    shutil.rmtree(instance.base, ignore_errors=True)
    return master_cf_entries(instance._master_cf())


def test_one_master_cf_snippet_the_tested_one():
    """Only docs/postfix.md shows master.cf entries; its filter transport and re-injection
    smtpd are the tested ones, option for option, and its submission and pickup services hand
    mail to mailhook as the tested ones do."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        if page.name != "postfix.md":
            assert not master_cf_entries(page.read_text()), f"{page.name} repeats master.cf"
    documented = master_cf_entries((ROOT / "docs" / "postfix.md").read_text())
    tested = master_cf_under_test()
    for name in ("mailhook", "127.0.0.1:10026"):
        assert documented[name][1] == tested[name][1], name
        assert documented[name][0][-2:] == tested[name][0][-2:], name  # maxproc, command
    handing_over = "content_filter=mailhook:[127.0.0.1]:10025"
    assert handing_over in tested["pickup"][1] and handing_over in tested["127.0.0.1:587"][1]
    for name in ("submission", "pickup"):
        assert handing_over in documented[name][1], name


def test_dkim_is_signed_after_mailhook_with_opendkim_and_rspamd_placed():
    """The Postfix guide says where OpenDKIM and rspamd sign (after mailhook, never before),
    and no page suggests signing before mailhook."""
    guide = (ROOT / "docs" / "postfix.md").read_text()
    section = guide[guide.index("### 4. DKIM"):guide.index("### 5.")]
    for fact in ("never before", "**OpenDKIM**", "**rspamd**", "`smtpd_milters`",
                 "`non_smtpd_milters`", "sign_authenticated = false;", "MTA ORIGINATING",
                 "re-injection smtpd"):
        assert fact in section, fact
    assert "after mailhook, never before" in (ROOT / "README.md").read_text()


def test_nextcloud_row_names_calendar_senders():
    """The compatibility table's Nextcloud row says the instance's address must be in
    policy.calendar_senders."""
    table = (ROOT / "docs" / "compatibility.md").read_text()
    [row] = [line for line in table.splitlines() if line.startswith("| Nextcloud |")]
    assert "`policy.calendar_senders`" in row


def test_readme_offers_the_package_first_and_the_git_checkout_second():
    """The README's install section names the Debian package, then the wheel with
    install-files, then the git checkout, and the quick start comes after them."""
    readme = (ROOT / "README.md").read_text()
    install = readme[readme.index("## Install"):readme.index("## Quick start")]
    positions = [install.index(step) for step in ("dpkg -i dist/mailhook-trueconf_",
                                                  "mailhook install-files",
                                                  "pip install -e '.[test]'")]
    assert positions == sorted(positions)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f"mailhook-trueconf_{version}_" in install and f"mailhook_trueconf-{version}-" in install
