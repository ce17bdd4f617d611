"""Fan-out bookkeeping: when have all parent units of a date finished, so their children can start?

A child endpoint (`for_each`) of a run date waits for every unit of its parent endpoint for that
date. Parents are planned units, or children themselves (chains): their count is known once they
are expanded. Pure bookkeeping, no I/O: the executor reads the parents' pages and expands.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from apilake.jobfile import Endpoint, Job, Source
from apilake.plan import Unit, children
from apilake.record import UnitResult

Group = tuple[str, str, str]  # (source, parent endpoint, run date)


@dataclass(frozen=True, slots=True)
class Ready:
    """The parents of `child` for `run_date` have all finished, with these results."""

    source: Source
    child: Endpoint
    run_date: dt.date
    parents: tuple[UnitResult, ...]


@dataclass
class FanOut:
    """Counts the parent units of each (source, parent endpoint, run date) still running."""

    job: Job
    only: Iterable[str] = ()
    _children: dict[tuple[str, str], list[tuple[Source, Endpoint]]] = field(default_factory=dict)
    _waiting: dict[Group, int] = field(default_factory=dict)
    _results: dict[Group, list[UnitResult]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for source, child in children(self.job, self.only):
            assert child.for_each is not None
            self._children.setdefault((source.name, child.for_each.endpoint), []).append((source, child))

    def expect(self, units: Iterable[Unit], *, source: str = "", endpoint: str = "", run_date: str = "") -> list[Ready]:
        """Count `units` as parents; for an expansion (`endpoint`, `run_date`) that gave no units,
        its own children are ready at once (with no parents, hence no units)."""
        units = list(units)
        for unit in units:
            if (unit.source, unit.endpoint) in self._children:
                group = (unit.source, unit.endpoint, unit.run_date)
                self._waiting[group] = self._waiting.get(group, 0) + 1
        if units or (source, endpoint) not in self._children:
            return []
        return self._ready((source, endpoint, run_date))

    def finished(self, unit: Unit, result: UnitResult) -> list[Ready]:
        """Note a parent's result; the children whose parents have now all finished."""
        group = (unit.source, unit.endpoint, unit.run_date)
        if group not in self._waiting:
            return []
        self._results.setdefault(group, []).append(result)
        self._waiting[group] -= 1
        return self._ready(group) if self._waiting[group] == 0 else []

    def _ready(self, group: Group) -> list[Ready]:
        source, parent, run_date = group
        results = tuple(self._results.pop(group, []))
        self._waiting.pop(group, None)
        return [Ready(s, child, dt.date.fromisoformat(run_date), results) for s, child in self._children.get((source, parent), [])]

    def pending(self) -> list[tuple[Source, Endpoint, str]]:
        """Child endpoints (and theirs) of each run date whose parents have not all finished:
        what a stopped run never expanded."""
        found = []
        for source, parent, run_date in self._waiting:
            for s, child in self._children.get((source, parent), []):
                found += [(s, endpoint, run_date) for s, endpoint in [(s, child), *self.descendants(source, child.name)]]
        return found

    def descendants(self, source: str, endpoint: str) -> list[tuple[Source, Endpoint]]:
        """Every selected endpoint below `endpoint` (children, grandchildren, ...)."""
        found = []
        for s, child in self._children.get((source, endpoint), []):
            found += [(s, child), *self.descendants(source, child.name)]
        return found
