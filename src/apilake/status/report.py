"""The evidence behind `apilake status` and the dashboard, read from the destination.

Evidence comes from the destination only: the run records under `_apilake/runs/` and the
objects themselves, so the answer is right even after someone deletes or moves objects.
With a job file, "expected" is what the planner says (pure, no network): every JSON unit's key
(page 1) must exist; a bulk unit's files are known from the records (`gaps.Evidence`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from apilake.destinations import Destination
from apilake.errors import ApilakeError, ExitCode
from apilake.fetch.quota import job_quota_use
from apilake.incremental import UNOPENED, CursorState, Window, cursors, recorded_windows, window_key
from apilake.jobfile import KINDS_WITH_KEY, Job
from apilake.ndjson import landed_page
from apilake.record import RecordCache, RunRecord, landed_sizes, on_destination, read_records
from apilake.redact import Redactor
from apilake.status.gaps import Cell, Evidence, Gap, cells, expected_from_records, find_gaps
from apilake.status.liveness import run_state
from apilake.vocabulary import EndpointKind, ResultKind

if TYPE_CHECKING:
    from apilake.plan import Unit


async def existing(dest: Destination, keys: Iterable[str], sizes: Mapping[str, int] = {}) -> set[str]:
    """Which of `keys` exist (at the size in `sizes`, where known), with one listing per folder
    rather than one request per key."""
    folders: dict[str, set[str]] = {}
    for key in keys:
        folders.setdefault(posixpath.dirname(key), set()).add(key)
    found: set[str] = set()

    def keep(key: str, size: int) -> None:
        if sizes.get(key, size) == size:  # another size: changed or damaged since it landed
            found.add(key)

    for folder, wanted in folders.items():
        if not folder or len(wanted) == 1:
            for key in wanted:
                if (info := await dest.stat(key)) is not None:
                    keep(key, info.size)
            continue
        async for info in dest.list(folder + "/"):
            if info.key in wanted:
                keep(info.key, info.size)
    return found


async def present_units(dest: Destination, candidates: Mapping[str, list[str] | None], sizes: Mapping[str, int] = {}) -> set[str]:
    """Units whose required keys all exist (`None`: not present whatever the destination holds)."""
    keys = {k for ks in candidates.values() if ks for k in ks}
    there = await existing(dest, keys, sizes)
    return {unit for unit, ks in candidates.items() if ks and all(k in there for k in ks)}


Planned = dict[str, tuple[EndpointKind, str]]  # unit id → (kind, key)


def expected_from_job(
    job: Job, run_dates: list[dt.date], windows: Mapping[str, Window | None] | None = None
) -> tuple[dict[tuple[str, str], set[str]], Planned]:
    """(endpoint, run date) → unit ids, and unit id → (kind, json key) from the pure planner
    (incremental units with the `windows` recorded for them, none where a later one covers)."""
    from apilake.plan import plan

    windows = windows or {}
    expected: dict[tuple[str, str], set[str]] = {}
    units: Planned = {}
    for run_date in run_dates:
        for unit in covered_out(plan(job, [run_date], windows=opened(windows)), windows):
            expected.setdefault((f"{unit.source}/{unit.endpoint}", run_date.isoformat()), set()).add(unit.id)
            units[unit.id] = (unit.kind, unit.key)
    return expected, units


def opened(windows: Mapping[str, Window | None]) -> dict[str, Window]:
    return {key: window for key, window in windows.items() if window is not None}


def covered_out(units: list[Unit], windows: Mapping[str, Window | None]) -> list[Unit]:
    """Units less the incremental ones of a date no run opened that a later window covers."""
    return [u for u in units if windows.get(window_key(u.source, u.endpoint, u.variables, u.run_date), UNOPENED) is not None]


async def expect_children(
    dest: Destination, job: Job, run_dates: list[dt.date], expected: dict[tuple[str, str], set[str]], units: Planned, ignored: set[str]
) -> None:
    """Add the fan-out children to `expected` and `units`: the ones their landed parent implies.

    A child date whose parent has not (all) landed is expected as one unit named after the date
    (`source/child/date`), which is never present: the date is a gap until the parent lands. A
    parent a response rule `ignored` is done and implies no children, as in the run.
    """
    from apilake.fetch.json import landed_pages
    from apilake.plan import children, expand_children, incremental_children

    for source, child in children(job):
        assert child.for_each is not None
        fmt = next(e.format for e in source.endpoints if e.name == child.for_each.endpoint)
        for run_date in run_dates:
            parents = expected.get((f"{source.name}/{child.for_each.endpoint}", run_date.isoformat()), set()) - ignored
            keys = [units[p][1] for p in parents if p in units]  # a pending parent has no unit (nor key) yet
            ids: set[str] = set()
            if len(keys) == len(parents) and len(await existing(dest, keys)) == len(keys):  # no parents: no children
                pages = [landed_page(body, fmt) for key in sorted(keys) for body in await landed_pages(dest, key)]
                windows = await recorded_windows(dest, incremental_children(source, child, run_date, pages))
                for unit in covered_out(expand_children(source, child, run_date, pages, opened(windows)), windows):
                    ids.add(unit.id)
                    units[unit.id] = (unit.kind, unit.key)
            else:
                ids.add(f"{source.name}/{child.name}/{run_date - dt.timedelta(days=child.lag)}")
            expected[(f"{source.name}/{child.name}", run_date.isoformat())] = ids


@dataclass
class StatusReport:
    """The facts `apilake status` prints and the dashboard draws: one model for both."""

    destination: str
    records: list[RunRecord]
    run_dates: list[dt.date]
    expected: dict[tuple[str, str], set[str]]
    gaps: list[Gap]
    cells: list[Cell] = field(default_factory=list)
    quota: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (source, day, {used, limit})
    tables: list[Any] | None = None  # tables.TableStatus per table; None: the job has no `tables:`
    tables_error: str | None = None  # why the tables could not be read
    cursors: list[CursorState] = field(default_factory=list)  # incremental cursors (`apilake.incremental`)

    @property
    def behind(self) -> list[Any]:
        return [t for t in self.tables or [] if t.behind]

    @property
    def exit_code(self) -> ExitCode:
        """1 for gaps, and for tables behind the raw zone (or unreadable): data that landed but
        that a query does not see is missing too."""
        return ExitCode.FAILED if self.gaps or self.behind or self.tables_error else ExitCode.OK


def planned_keys(evidence: Evidence, unit_id: str, kind: EndpointKind, key: str) -> list[str] | None:
    """The keys a planned unit needs: a JSON unit's planned key; a raw file's as it landed (its
    extension may come from the answer's Content-Type), else as planned; a listing's files."""
    if kind == "file":
        return evidence.required_keys(unit_id, "file") or [key]
    return [key] if kind in KINDS_WITH_KEY else evidence.required_keys(unit_id, "listing")


async def build_report(
    dest: Destination, job: Job | None, run_dates: list[dt.date], last_due: dt.date | None = None, cache: RecordCache | None = None
) -> StatusReport:
    """Read the destination's evidence for `run_dates`; dates after `last_due` are not gaps yet."""
    last_due = last_due or max(run_dates)
    records = [r.with_status(await run_state(dest, r)) for r in await read_records(dest, cache)]
    evidence = Evidence(records)
    if job is not None:
        from apilake.plan import incremental_units

        expected, planned = expected_from_job(job, run_dates, await recorded_windows(dest, incremental_units(job, run_dates)))
        await expect_children(dest, job, run_dates, expected, planned, evidence.ignored)
        candidates = {unit_id: planned_keys(evidence, unit_id, kind, key) for unit_id, (kind, key) in planned.items()}
    else:
        expected = expected_from_records(records, run_dates)
        kinds: dict[str, ResultKind] = {u.unit: u.kind for r in records for u in r.units if u.kind in ("json", "listing")}
        candidates = {unit_id: evidence.required_keys(unit_id, kinds.get(unit_id, "json")) for units in expected.values() for unit_id in units}
    present = await present_units(dest, candidates, landed_sizes(records)) | evidence.ignored
    quota = await job_quota_use(job, dest)
    due = {key: units for key, units in expected.items() if dt.date.fromisoformat(key[1]) <= last_due}
    tables, tables_error = await asyncio.to_thread(tables_of, job, dest.url, records) if job and job.tables else (None, None)
    return StatusReport(
        dest.url,
        records,
        run_dates,
        expected,
        find_gaps(due, present),
        cells(expected, present, evidence, last_due),
        quota,
        tables,
        tables_error,
        await cursors(dest),
    )


def tables_of(job: Job, url: str, records: list[RunRecord]) -> tuple[list[Any], str | None]:
    """Per table, rows and the dates whose partition is behind the raw zone (every landed date);
    a catalog that cannot be read is reported, not raised: status shows what it can."""
    from apilake.tables import table_status

    try:
        return table_status(job, url, records), None
    except Exception as exc:  # noqa: BLE001 - pyiceberg's and the catalog driver's own errors too
        return [], Redactor(job.secrets())(str(exc) if isinstance(exc, ApilakeError) else f"{type(exc).__name__}: {exc}")


def inspect(url: str, job: Job | None, run_dates: list[dt.date], last_due: dt.date | None = None, cache: RecordCache | None = None) -> StatusReport:
    """`build_report` on the destination at `url`, opened and closed here (for synchronous callers)."""
    return on_destination(url, job.s3 if job else None, lambda dest: build_report(dest, job, run_dates, last_due, cache))


def window(timezone: str, now: dt.datetime, days: int, *, ahead: int = 0) -> list[dt.date]:
    """The last `days` run dates ending yesterday in `timezone`, plus `ahead` dates not yet due."""
    from apilake.dates import default_run_date

    last = default_run_date(timezone, now)
    return [last - dt.timedelta(days=i) for i in range(days - 1, -ahead - 1, -1)]
