"""Keys two units would share are refused before anything runs, naming both units."""

from __future__ import annotations

import re

import pytest

from apilake.collisions import KeyClaims
from apilake.errors import JobFileError
from apilake.plan import Unit


def unit(endpoint: str, key: str, paginate: str = "none", kind: str = "json", date: str = "2026-11-25") -> Unit:
    return Unit("s", endpoint, kind, date, (), "http://api.test/x", (), key, paginate=paginate)


@pytest.mark.parametrize(
    "units, message",
    [
        ([unit("a", "x/a.json"), unit("b", "x/b.json")], None),
        ([unit("a", "x/d.json"), unit("b", "x/d.json")], "units 's/a/2026-11-25' (s/a) and 's/b/2026-11-25' (s/b) would both land on key 'x/d.json'"),
        (
            [unit("a", "x/d.json", "next_page"), unit("b", "x/d.page-0002.json")],
            "page 2 of 's/a/2026-11-25' (s/a) lands on key 'x/d.page-0002.json', the key of 's/b/2026-11-25' (s/b)",
        ),
        (
            [unit("b", "x/d.page-0002.json"), unit("a", "x/d.json", "next_page")],
            "page 2 of 's/a/2026-11-25' (s/a) lands on key 'x/d.page-0002.json'",
        ),  # either order
        ([unit("a", "x/d.json"), unit("b", "x/d.page-0002.json")], None),  # no pages beside an unpaginated key
        ([unit("a", "x/d.json", "next_page"), unit("b", "x/d.page-0002.json", kind="bulk")], None),  # a bulk key is a template
        ([unit("a", "x/d.json", "cursor"), unit("a", "x/d.page-0107.json", date="2026-11-26")], "put what tells them apart"),
        ([unit("a", "x/d.json"), unit("a", "y/d.json")][:1] * 2, "two units are both 's/a/2026-11-25'"),
    ],
)
def test_claims_refuse_keys_two_units_would_write(units: list[Unit], message: str | None) -> None:
    claims = KeyClaims()
    if message is None:
        claims.claim(units)
    else:
        with pytest.raises(JobFileError, match=re.escape(message)):
            claims.claim(units)


def test_later_claims_are_checked_against_earlier_ones() -> None:
    """What the executor does with a fan-out child's units once its parent has landed."""
    claims = KeyClaims()
    claims.claim([unit("parent", "s/accounts.json", "cursor")])
    claims.claim([unit("child", "s/products/1.json")])
    with pytest.raises(JobFileError, match="give each endpoint a key of its own"):
        claims.claim([unit("child", "s/accounts.page-0002.json", date="2026-11-26")])
