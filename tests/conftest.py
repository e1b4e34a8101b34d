"""Shared test fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

MESSAGES = Path(__file__).parent / "fixtures" / "messages"


@pytest.fixture
def message_bytes() -> Callable[[str], bytes]:
    """Load a fixture message from tests/fixtures/messages by file name."""

    def load(name: str) -> bytes:
        return (MESSAGES / name).read_bytes()

    return load


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    """Print the reliability figures the tests measured (see docs/reliability.md)."""
    from tests.support import reliability

    if reliability.FIGURES:
        terminalreporter.section("reliability figures")
        for line in reliability.summary():
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def postgres_server():  # type: ignore[no-untyped-def]
    """A PostgreSQL server of the tests' own, for the whole run (skipped without binaries)."""
    from tests.support.postgres import PostgresServer, why_not_available

    reason = why_not_available()
    if reason:
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    server = PostgresServer().init().start()
    yield server
    server.destroy()


@pytest.fixture
def postgres_url(postgres_server) -> str:  # type: ignore[no-untyped-def]
    """A new, empty database on the tests' PostgreSQL server (its password is apart)."""
    return str(postgres_server.new_database())
