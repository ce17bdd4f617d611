"""The gap model: which units of which endpoint and run date are expected, which are there, and
why the rest are not. Pure: it reads run records and sets of unit ids, never the destination.

With a job file, "expected" is what the planner says (`status.report`); without one, the
endpoints, matrix combinations and lags are inferred from the run records
(`expected_from_records`). A bulk unit counts as present when every file of its latest complete
listing in the run records has landed in some run and is still there (see `Evidence`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from apilake.record import RunRecord, UnitResult
from apilake.vocabulary import DID_NOT_LAND, DONE, ResultKind, UnitStatus


@dataclass(frozen=True, slots=True)
class Gap:
    """Units of one endpoint (`source/endpoint`) for one run date that are not in the destination."""

    endpoint: str
    run_date: str
    missing: tuple[str, ...]
    expected: int

    @property
    def date(self) -> str:
        """The data date (run date minus the endpoint's lag), as in the unit ids and keys."""
        return self.missing[0].split("/")[2]


def find_gaps(expected: Mapping[tuple[str, str], Collection[str]], present: Collection[str]) -> list[Gap]:
    """Pure: `expected` maps (endpoint, run date) to unit ids; a gap lists the ids not `present`."""
    present = set(present)
    gaps = []
    for (endpoint, run_date), units in sorted(expected.items()):
        missing = tuple(sorted(u for u in set(units) if u not in present))
        if missing:
            gaps.append(Gap(endpoint, run_date, missing, len(set(units))))
    return gaps


def fill_commands(gaps: Iterable[Gap], job_path: str) -> list[str]:
    """One `apilake run` per endpoint over its gap dates (a rerun skips what already landed)."""
    dates: dict[str, list[str]] = {}
    for gap in gaps:
        dates.setdefault(gap.endpoint, []).append(gap.run_date)
    commands = []
    for endpoint, days in sorted(dates.items()):
        name = endpoint.split("/", 1)[1]
        span = f"--date {days[0]}" if min(days) == max(days) else f"--from {min(days)} --to {max(days)}"
        commands.append(f"apilake run {job_path} {span} --only {name}")
    return commands


@dataclass(frozen=True, slots=True)
class Problem:
    """A unit (or one file of a listing) that did not land in some run, and why."""

    unit: str
    status: UnitStatus
    error: str


@dataclass(frozen=True, slots=True)
class Attempt:
    """The latest run that tried a planned unit; `problems` is empty when it landed (or was skipped)."""

    run_id: str
    problems: tuple[Problem, ...] = ()


@dataclass
class Evidence:
    """Run records, flattened for lookups: the latest complete knowledge of each unit and file.

    A run that was interrupted or failed knows less than one that finished its work, and must
    not unlearn what an earlier run proved. So each fact comes from the latest record that holds
    it whole: a JSON unit's or a file's keys from its latest landed (or skipped) result, and a
    bulk date's set of files from its latest *complete listing* — a listing fetched to its end
    (`listed`) whose every selected file that run went on to record (landed, skipped, failed or
    interrupted alike). A forced rerun stopped half way thus leaves the files the earlier run
    landed counting, as long as they are still there at their recorded sizes.
    """

    records: list[RunRecord]
    good: dict[str, UnitResult] = field(default_factory=dict)  # json or file unit id → its latest landed/skipped result
    listing_files: dict[str, list[str]] = field(default_factory=dict)  # listing id → file unit ids of its latest complete listing
    latest: dict[str, Attempt] = field(default_factory=dict)  # planned unit id → its latest attempt
    ignored: set[str] = field(default_factory=set)  # units whose latest done result is `ignored`: done, with nothing to land

    def __post_init__(self) -> None:
        for record in self.records:  # oldest first: later records win
            listings = {u.unit for u in record.units if u.kind == "listing"}
            files: dict[str, list[UnitResult]] = {}
            for unit in record.units:
                if unit.kind == "file":
                    parts = unit.unit.split("/")
                    owner = next((p for i in range(3, len(parts)) if (p := "/".join(parts[:i])) in listings), None)
                    if owner is not None:
                        files.setdefault(owner, []).append(unit)
            for unit in record.units:
                if unit.kind in ("json", "listing"):
                    tried = [unit, *files.get(unit.unit, [])]
                    problems = tuple(Problem(u.unit, u.status, u.error or "no reason recorded") for u in tried if u.status in DID_NOT_LAND)
                    self.latest[unit.unit] = Attempt(record.run_id, problems)
                if unit.status == "ignored":
                    self.ignored.add(unit.unit)
                elif unit.status in DONE:
                    self.ignored.discard(unit.unit)
                if unit.kind in ("json", "file") and unit.status in DONE:
                    self.good[unit.unit] = unit
                elif unit.kind == "listing" and unit.status == "listed":
                    mine = files.get(unit.unit, [])
                    if len(mine) >= (unit.listing or {}).get("selected", len(mine)):
                        self.listing_files[unit.unit] = [f.unit for f in mine]

    def required_keys(self, unit_id: str, kind: ResultKind) -> list[str] | None:
        """Keys that must exist for a unit to count as present; None when the records say it never completed."""
        if kind != "listing":  # a JSON unit's pages, a raw file's key
            return self._keys(unit_id)
        files = self.listing_files.get(unit_id)
        keys = [self._keys(f) for f in files or []]
        return None if not files or None in keys else [k for ks in keys if ks for k in ks]

    def _keys(self, unit_id: str) -> list[str] | None:
        """The keys of a JSON unit's or a file's latest landed (or skipped) result."""
        result = self.good.get(unit_id)
        return [o.key for o in result.objects] or None if result else None


def expected_from_records(records: list[RunRecord], run_dates: list[dt.date]) -> dict[tuple[str, str], set[str]]:
    """Endpoints and matrix combinations ever recorded, for every run date; lags inferred per endpoint."""
    combos: dict[str, set[str]] = {}
    lags: dict[str, int] = {}
    for record in records:
        first_run = min((dt.date.fromisoformat(d) for d in record.dates), default=None)
        earliest: dict[str, dt.date] = {}
        for unit in record.units:
            if unit.kind not in ("json", "listing"):
                continue
            endpoint = f"{unit.source}/{unit.endpoint}"
            stem = f"{endpoint}/{unit.date}"
            combos.setdefault(endpoint, set()).add(unit.unit[len(stem) :])
            date = dt.date.fromisoformat(unit.date)
            earliest[endpoint] = min(earliest.get(endpoint, date), date)
        if first_run:
            for endpoint, date in earliest.items():
                lags[endpoint] = max(0, (first_run - date).days)
    expected: dict[tuple[str, str], set[str]] = {}
    for endpoint, suffixes in combos.items():
        for run_date in run_dates:
            date = run_date - dt.timedelta(days=lags.get(endpoint, 0))
            expected[endpoint, run_date.isoformat()] = {f"{endpoint}/{date.isoformat()}{s}" for s in suffixes}
    return expected


CellState = Literal["landed", "partly landed", "failed", "missing", "not yet due"]


@dataclass(frozen=True, slots=True)
class Cell:
    """One endpoint on one run date: what was expected, what is there, and why the rest is not."""

    endpoint: str
    run_date: str
    expected: tuple[str, ...]
    present: tuple[str, ...]
    due: bool  # the run date has come (it is at most yesterday in the job's time zone)
    attempts: tuple[tuple[str, Attempt], ...] = ()  # (unit id, latest attempt) of the units any run tried

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(u for u in self.expected if u not in set(self.present))

    @property
    def problems(self) -> list[Problem]:
        """Why the units that are not present did not land, as their latest runs recorded it."""
        missing = set(self.missing)
        return [p for unit, attempt in self.attempts if unit in missing for p in attempt.problems]

    @property
    def state(self) -> CellState:
        if len(self.present) == len(self.expected):
            return "landed"
        if self.present:
            return "partly landed"
        if not self.due:
            return "not yet due"
        return "failed" if self.problems else "missing"


def cells(expected: Mapping[tuple[str, str], Collection[str]], present: Collection[str], evidence: Evidence, last_due: dt.date) -> list[Cell]:
    """Pure: the grid of endpoints × run dates behind both the gap report and the dashboard."""
    present = set(present)
    grid = []
    for (endpoint, run_date), units in sorted(expected.items()):
        ids = tuple(sorted(set(units)))
        attempts = tuple((u, evidence.latest[u]) for u in ids if u in evidence.latest)
        due = dt.date.fromisoformat(run_date) <= last_due
        grid.append(Cell(endpoint, run_date, ids, tuple(u for u in ids if u in present), due, attempts))
    return grid
