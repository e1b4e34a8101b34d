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
