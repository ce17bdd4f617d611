"""Keys two units would share: refused before anything is fetched, naming both units.

A unit writes its key, and a paginated one also writes (and on a shorter refetch removes) the
page keys beside it (`keys.page_key`). If another unit's key is among them, the two would
overwrite each other, and `--force` on one would delete the other's object. Pure: the planner
claims every planned unit's keys, the executor a fan-out child's as its parent has landed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from apilake.errors import JobFileError
from apilake.jobfile import KINDS_WITH_KEY
from apilake.keys import page_bases


class Unit(Protocol):
    """What a claim reads of a unit (`plan.Unit`, which the planner makes)."""

    @property
    def id(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def paginate(self) -> str: ...


class KeyClaims:
    """The units and keys claimed so far (ids, keys, and the paginated units' page keys)."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._keys: dict[str, Unit] = {}
        self._paginated: dict[str, Unit] = {}  # page-1 key → a unit that writes pages beside it
        self._page_of: dict[str, tuple[str, int, Unit]] = {}  # key → (a claimed key that is page n of it, n, its unit)

    def claim(self, units: Iterable[Unit]) -> None:
        """Claim units' ids and keys, or raise a `JobFileError` naming the two units that collide."""
        for unit in units:
            if unit.id in self._ids:
                raise JobFileError(f"two units are both {unit.id!r}: matrix values of one variable must differ as text")
            self._ids.add(unit.id)
            if unit.kind in KINDS_WITH_KEY:
                self._claim_key(unit)

    def _claim_key(self, unit: Unit) -> None:
        key = unit.key
        if key in self._keys:
            raise _collision(self._keys[key], unit, key)
        for base, page in page_bases(key):
            if base in self._paginated:
                raise _collision(self._paginated[base], unit, key, page)
            self._page_of[base] = (key, page, unit)
        if unit.paginate != "none":
            if key in self._page_of:
                other_key, page, other = self._page_of[key]
                raise _collision(unit, other, other_key, page)
            self._paginated[key] = unit
        self._keys[key] = unit


def _collision(first: Unit, second: Unit, key: str, page: int = 1) -> JobFileError:
    """`first` writes `key` (as its page `page`), and so would `second` (as its own key)."""
    owner = f"{first.source}/{first.endpoint}"
    other = f"{second.source}/{second.endpoint}"
    how = (
        f"page {page} of {first.id!r} ({owner}) lands on key {key!r}, the key of {second.id!r} ({other})"
        if page > 1
        else (f"units {first.id!r} ({owner}) and {second.id!r} ({other}) would both land on key {key!r}")
    )
    fix = (
        "put what tells them apart ({date}, matrix variables) into the endpoint's key"
        if owner == other
        else ("give each endpoint a key of its own (e.g. with {endpoint} in it)")
    )
    return JobFileError(f"{how}: one would overwrite the other; {fix}")
