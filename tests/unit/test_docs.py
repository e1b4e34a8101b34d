"""The documentation covers every command and links every page."""

from __future__ import annotations

import argparse
import re
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
    sections = re.findall(r"^### (\w+)$", text, re.M)
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
