"""docs/compatibility.md stays true: every producer has a fixture, and the link is where it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailhook.core.mime import parse_message
from tests.fixtures.checks import MESSAGES, PLACES, link_places

DOC = Path(__file__).resolve().parents[2] / "docs" / "compatibility.md"
GOLDEN = Path(__file__).resolve().parents[1] / "golden"
URL = "https://video.example.com/c/4000000001"


def _rows() -> list[dict[str, str]]:
    lines = DOC.read_text(encoding="utf-8").split("## Producers", 1)[1].splitlines()
    table = [line for line in lines if line.startswith("|")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    rows = []
    for line in table[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


ROWS = _rows()


def _fixtures(row: dict[str, str]) -> list[str]:
    return re.findall(r"`([^`]+\.eml)`", row["Fixtures"])


def _places(row: dict[str, str]) -> set[str]:
    cell = row["Where the link shows"]
    return set() if cell == "—" else {place.strip() for place in cell.split(",")}


def test_table_has_the_expected_columns_and_producers():
    """The table has one row per producer with every column filled."""
    assert len(ROWS) >= 18
    for row in ROWS:
        assert set(row) == {
            "Producer", "Fixtures", "What it sends", "What mailhook does",
            "Where the link shows", "Known limits",
        }  # fmt: skip
        assert all(row.values()), row["Producer"]


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row["Producer"][:40])
def test_every_producer_named_has_a_fixture(row):
    """Each producer row names at least one fixture message, and each exists."""
    names = _fixtures(row)
    assert names, f"{row['Producer']} names no fixture"
    for name in names:
        assert (MESSAGES / name).is_file(), f"{name} is not in tests/fixtures/messages"


def test_every_fixture_is_listed():
    """Every fixture message belongs to some producer row, so the table covers them all."""
    listed = {name for row in ROWS for name in _fixtures(row)}
    assert {path.name for path in MESSAGES.glob("*.eml")} <= listed


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row["Producer"][:40])
def test_link_shows_where_the_table_says(row):
    """For invitation rows, every golden rewrite has the link in each place the table names."""
    places = _places(row)
    assert places <= PLACES, f"unknown places {places - PLACES}"
    for name in _fixtures(row):
        method = parse_message((MESSAGES / name).read_bytes()).method
        if method != "REQUEST":
            assert not places, f"{name} is no REQUEST, yet the table names places for it"
            continue
        assert places, f"{row['Producer']}: a REQUEST fixture needs places"
        found = link_places((GOLDEN / name).read_bytes(), URL)
        assert places <= found, f"{name}: link missing in {places - found}"
