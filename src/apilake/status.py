"""`apilake status`: recent runs, the latest failures, and which dates of which endpoints are missing.

Evidence comes from the destination only: the run records under `_apilake/runs/` and the
objects themselves, so the answer is right even after someone deletes or moves objects.

With a job file, "expected" is what the planner says (pure, no network): every JSON unit's key
(page 1) must exist; a bulk unit counts as present when every file of its latest complete
listing in the run records has landed in some run and is still there (see `Evidence`). Without a
job file, the endpoints, matrix combinations and lags are inferred from the run records.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import posixpath
import socket
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from apilake.destinations import Destination
from apilake.errors import ApilakeError
from apilake.fetch.quota import job_quota_use
from apilake.jobfile import KINDS_WITH_KEY, Job
from apilake.lease import is_live
from apilake.lease import parse as parse_lease
from apilake.lock import lock_is_free
from apilake.printable import printable
from apilake.redact import Redactor
from apilake.record import DID_NOT_LAND, RecordCache, entry_bytes, entry_retries, landed_sizes, on_destination, read_records

OK = ("landed", "skipped")


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


# ---------------------------------------------------------------------------------------------
# evidence from the destination


@dataclass(frozen=True, slots=True)
class Problem:
    """A unit (or one file of a listing) that did not land in some run, and why."""

    unit: str
    status: str
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

    records: list[dict[str, Any]]
    good: dict[str, dict[str, Any]] = field(default_factory=dict)  # json or file unit id → its latest landed/skipped result
    listing_files: dict[str, list[str]] = field(default_factory=dict)  # listing id → file unit ids of its latest complete listing
    latest: dict[str, Attempt] = field(default_factory=dict)  # planned unit id → its latest attempt

    def __post_init__(self) -> None:
        for record in self.records:  # oldest first: later records win
            units = record.get("units") or []
            listings = {u["unit"] for u in units if u.get("kind") == "listing"}
            files: dict[str, list[dict[str, Any]]] = {}
            for unit in units:
                if unit.get("kind") == "file":
                    parts = unit["unit"].split("/")
                    owner = next((p for i in range(3, len(parts)) if (p := "/".join(parts[:i])) in listings), None)
                    if owner is not None:
                        files.setdefault(owner, []).append(unit)
            for unit in units:
                if unit.get("kind") in ("json", "listing"):
                    tried = [unit, *files.get(unit["unit"], [])]
                    problems = tuple(
                        Problem(u["unit"], u["status"], u.get("error") or "no reason recorded") for u in tried if u.get("status") in DID_NOT_LAND
                    )
                    self.latest[unit["unit"]] = Attempt(str(record.get("run_id", "?")), problems)
                if unit.get("kind") in ("json", "file") and unit.get("status") in OK:
                    self.good[unit["unit"]] = unit
                elif unit.get("kind") == "listing" and unit.get("status") == "listed":
                    mine = files.get(unit["unit"], [])
                    if len(mine) >= (unit.get("listing") or {}).get("selected", len(mine)):
                        self.listing_files[unit["unit"]] = [f["unit"] for f in mine]

    def required_keys(self, unit_id: str, kind: str) -> list[str] | None:
        """Keys that must exist for a unit to count as present; None when the records say it never completed."""
        if kind == "json":
            return self._keys(unit_id)
        files = self.listing_files.get(unit_id)
        keys = [self._keys(f) for f in files or []]
        return None if not files or None in keys else [k for ks in keys if ks for k in ks]

    def _keys(self, unit_id: str) -> list[str] | None:
        """The keys of a JSON unit's or a file's latest landed (or skipped) result."""
        result = self.good.get(unit_id)
        return [o["key"] for o in result.get("objects") or []] or None if result else None


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


def expected_from_job(job: Job, run_dates: list[dt.date]) -> tuple[dict[tuple[str, str], set[str]], dict[str, tuple[str, str]]]:
    """(endpoint, run date) → unit ids, and unit id → (kind, json key) from the pure planner."""
    from apilake.plan import plan

    expected: dict[tuple[str, str], set[str]] = {}
    units: dict[str, tuple[str, str]] = {}
    for run_date in run_dates:
        for unit in plan(job, [run_date]):
            expected.setdefault((f"{unit.source}/{unit.endpoint}", run_date.isoformat()), set()).add(unit.id)
            units[unit.id] = (unit.kind, unit.key)
    return expected, units


async def expect_children(
    dest: Destination, job: Job, run_dates: list[dt.date], expected: dict[tuple[str, str], set[str]], units: dict[str, tuple[str, str]]
) -> None:
    """Add the fan-out children to `expected` and `units`: the ones their landed parent implies.

    A child date whose parent has not (all) landed is expected as one unit named after the date
    (`source/child/date`), which is never present: the date is a gap until the parent lands.
    """
    from apilake.fetch.json import landed_pages
    from apilake.plan import children, expand_children

    for source, child in children(job):
        assert child.for_each is not None
        for run_date in run_dates:
            parents = expected.get((f"{source.name}/{child.for_each.endpoint}", run_date.isoformat()), set())
            keys = [units[p][1] for p in parents if p in units]  # a pending parent has no unit (nor key) yet
            ids: set[str] = set()
            if len(keys) == len(parents) and len(await existing(dest, keys)) == len(keys):  # no parents: no children
                pages = [json.loads(body) for key in sorted(keys) for body in await landed_pages(dest, key)]
                for unit in expand_children(source, child, run_date, pages):
                    ids.add(unit.id)
                    units[unit.id] = (unit.kind, unit.key)
            else:
                ids.add(f"{source.name}/{child.name}/{run_date - dt.timedelta(days=child.lag)}")
            expected[(f"{source.name}/{child.name}", run_date.isoformat())] = ids


def expected_from_records(records: list[dict[str, Any]], run_dates: list[dt.date]) -> dict[tuple[str, str], set[str]]:
    """Endpoints and matrix combinations ever recorded, for every run date; lags inferred per endpoint."""
    combos: dict[str, set[str]] = {}
    lags: dict[str, int] = {}
    for record in records:
        first_run = min((dt.date.fromisoformat(d) for d in record.get("dates") or []), default=None)
        earliest: dict[str, dt.date] = {}
        for unit in record.get("units") or []:
            if unit.get("kind") not in ("json", "listing"):
                continue
            endpoint = f"{unit['source']}/{unit['endpoint']}"
            stem = f"{endpoint}/{unit['date']}"
            combos.setdefault(endpoint, set()).add(unit["unit"][len(stem) :])
            date = dt.date.fromisoformat(unit["date"])
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


def cells(
    expected: Mapping[tuple[str, str], Collection[str]], present: Collection[str], evidence: Evidence, last_due: dt.date
) -> list[Cell]:
    """Pure: the grid of endpoints × run dates behind both the gap report and the dashboard."""
    present = set(present)
    grid = []
    for (endpoint, run_date), units in sorted(expected.items()):
        ids = tuple(sorted(set(units)))
        attempts = tuple((u, evidence.latest[u]) for u in ids if u in evidence.latest)
        due = dt.date.fromisoformat(run_date) <= last_due
        grid.append(Cell(endpoint, run_date, ids, tuple(u for u in ids if u in present), due, attempts))
    return grid


@dataclass
class StatusReport:
    """The facts `apilake status` prints and the dashboard draws: one model for both."""

    destination: str
    records: list[dict[str, Any]]
    run_dates: list[dt.date]
    expected: dict[tuple[str, str], set[str]]
    gaps: list[Gap]
    cells: list[Cell] = field(default_factory=list)
    quota: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (source, day, {used, limit})
    tables: list[Any] | None = None  # tables.TableStatus per table; None: the job has no `tables:`
    tables_error: str | None = None  # why the tables could not be read

    @property
    def behind(self) -> list[Any]:
        return [t for t in self.tables or [] if t.behind]

    @property
    def exit_code(self) -> int:
        """1 for gaps, and for tables behind the raw zone (or unreadable): data that landed but
        that a query does not see is missing too."""
        return 1 if self.gaps or self.behind or self.tables_error else 0


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def run_state(dest: Destination, record: dict[str, Any]) -> str:
    """A record's status, with `running` told apart from `abandoned` (its process died).

    A run holds its lease (S3) or its OS lock (this host) while it lives: when that is free, or
    the lease names another run, nobody is finishing the record any more.
    """
    status = str(record.get("status", "?"))
    holder = record.get("holder") or {}
    if status != "running" or record.get("finished") or not holder:
        return status
    if holder.get("lease"):
        found = await dest.read_versioned(holder["lease"])
        doc = parse_lease(found.data) if found else None
        alive = doc is not None and doc.get("run_id") == record.get("run_id") and is_live(doc, dt.datetime.now(dt.timezone.utc))
        return "running" if alive else "abandoned"
    if holder.get("host") == socket.gethostname() and holder.get("lock"):
        return "abandoned" if lock_is_free(holder["lock"]) or not _pid_alive(holder.get("pid")) else "running"
    return status  # a lock on another host: only that host can tell


def planned_keys(evidence: Evidence, unit_id: str, kind: str, key: str) -> list[str] | None:
    """The keys a planned unit needs: a JSON unit's planned key; a raw file's as it landed (its
    extension may come from the answer's Content-Type), else as planned; a listing's files."""
    if kind == "file":
        return evidence.required_keys(unit_id, "json") or [key]
    return [key] if kind in KINDS_WITH_KEY else evidence.required_keys(unit_id, "listing")


async def build_report(
    dest: Destination, job: Job | None, run_dates: list[dt.date], last_due: dt.date | None = None, cache: RecordCache | None = None
) -> StatusReport:
    """Read the destination's evidence for `run_dates`; dates after `last_due` are not gaps yet."""
    last_due = last_due or max(run_dates)
    records = [{**r, "status": await run_state(dest, r)} for r in await read_records(dest, cache)]
    evidence = Evidence(records)
    if job is not None:
        expected, planned = expected_from_job(job, run_dates)
        await expect_children(dest, job, run_dates, expected, planned)
        candidates = {unit_id: planned_keys(evidence, unit_id, kind, key) for unit_id, (kind, key) in planned.items()}
    else:
        expected = expected_from_records(records, run_dates)
        kinds = {u["unit"]: u["kind"] for r in records for u in r.get("units") or [] if u.get("kind") in ("json", "listing")}
        candidates = {
            unit_id: evidence.required_keys(unit_id, kinds.get(unit_id, "json"))
            for units in expected.values()
            for unit_id in units
        }
    present = await present_units(dest, candidates, landed_sizes(records))
    quota = await job_quota_use(job, dest)
    due = {key: units for key, units in expected.items() if dt.date.fromisoformat(key[1]) <= last_due}
    tables, tables_error = await asyncio.to_thread(tables_of, job, dest.url, records) if job and job.tables else (None, None)
    return StatusReport(dest.url, records, run_dates, expected, find_gaps(due, present), cells(expected, present, evidence, last_due), quota,
                        tables, tables_error)


def tables_of(job: Job, url: str, records: list[dict[str, Any]]) -> tuple[list[Any], str | None]:
    """Per table, rows and the dates whose partition is behind the raw zone (every landed date);
    a catalog that cannot be read is reported, not raised: status shows what it can."""
    from apilake.tables import table_status

    try:
        return table_status(job, url, records), None
    except Exception as exc:  # noqa: BLE001 - pyiceberg's and the catalog driver's own errors too
        return [], Redactor(job.secrets())(str(exc) if isinstance(exc, ApilakeError) else f"{type(exc).__name__}: {exc}")


def inspect(
    url: str, job: Job | None, run_dates: list[dt.date], last_due: dt.date | None = None, cache: RecordCache | None = None
) -> StatusReport:
    """`build_report` on the destination at `url`, opened and closed here (for synchronous callers)."""
    return on_destination(url, job.s3 if job else None, lambda dest: build_report(dest, job, run_dates, last_due, cache))


def window(timezone: str, now: dt.datetime, days: int, *, ahead: int = 0) -> list[dt.date]:
    """The last `days` run dates ending yesterday in `timezone`, plus `ahead` dates not yet due."""
    from apilake.dates import default_run_date

    last = default_run_date(timezone, now)
    return [last - dt.timedelta(days=i) for i in range(days - 1, -ahead - 1, -1)]


# ---------------------------------------------------------------------------------------------
# text


def _when(text: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One run record in numbers: what the run list of `status` and the dashboard show."""

    run_id: str
    status: str
    dates: tuple[str, ...]
    counts: dict[str, int]
    started: dt.datetime | None
    finished: dt.datetime | None
    bytes: int
    retries: int
    throttled: int  # 429 answers

    @property
    def span(self) -> str:
        return "-" if not self.dates else self.dates[0] if len(self.dates) == 1 else f"{self.dates[0]}..{self.dates[-1]}"

    @property
    def seconds(self) -> float | None:
        return (self.finished - self.started).total_seconds() if self.started and self.finished else None

    @property
    def not_run(self) -> int:
        return self.counts.get("not_attempted", 0) + self.counts.get("interrupted", 0)


def summarize_run(record: dict[str, Any]) -> RunSummary:
    units = record.get("units") or []
    return RunSummary(
        str(record.get("run_id", "?")),
        str(record.get("status", "?")),
        tuple(record.get("dates") or ()),
        record.get("counts") or {},
        _when(record.get("started")),
        _when(record.get("finished")),
        sum(entry_bytes(u) for u in units),
        sum(entry_retries(u) for u in units),
        sum((u.get("http") or {}).get("429", 0) for u in units),
    )


def run_rows(records: list[dict[str, Any]], n: int) -> list[list[str]]:
    rows = [["run", "status", "dates", "landed", "skipped", "failed", "not run", "started (UTC)", "duration"]]
    for run in map(summarize_run, reversed(records[-n:] if n > 0 else [])):
        rows.append(
            [
                run.run_id,
                run.status,
                run.span,
                str(run.counts.get("landed", 0)),
                str(run.counts.get("skipped", 0)),
                str(run.counts.get("failed", 0)),
                str(run.not_run),
                f"{run.started.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M:%S}" if run.started else "-",
                "-" if run.seconds is None else f"{run.seconds:.1f}s",
            ]
        )
    return rows


def _day(gap: Gap) -> str:
    return gap.run_date + (f" (data date {gap.date})" if gap.date != gap.run_date else "")


def _dates(dates: Iterable[str], shown: int = 5) -> str:
    dates = sorted(dates)
    return ", ".join(dates[:shown]) + (f" and {len(dates) - shown} more" if len(dates) > shown else "")


def render(report: StatusReport, *, runs: int, job_path: str | None, timezone: str, limit: int = 20) -> str:
    from apilake.summary import table

    records = report.records
    out = [f"destination {report.destination}: {len(records)} run record(s)"]
    if records:
        out += ["", f"last {min(runs, len(records))} run(s), newest first:", table(run_rows(records, runs))]
        finished = [r for r in records if r.get("finished")]
        shown = [records[-1]] + ([finished[-1]] if finished and finished[-1] is not records[-1] else [])
        for record in shown:
            problems = [u for u in record.get("units") or [] if u.get("status") in DID_NOT_LAND]
            out.append("")
            if record.get("status") == "abandoned":
                out.append(f"run {record.get('run_id')} was abandoned: its process died before it finished "
                           "(its lock or lease is free); a rerun lands what it did not")
                continue
            if record.get("status") == "running" and not record.get("finished"):
                out.append(f"run {record.get('run_id')} is still running")
                continue
            out.append(f"failures of run {record.get('run_id')}: {len(problems) or 'none'}")
            for unit in problems[:limit]:
                out.append(f"  {unit['status'].upper()} {printable(unit['unit'])}: {printable(unit.get('error') or 'no reason recorded')}")
            if len(problems) > limit:
                out.append(f"  ... and {len(problems) - limit} more")
    dates = report.run_dates
    span = f"{dates[0]}..{dates[-1]}" if len(dates) > 1 else str(dates[0])
    basis = "the job file" if job_path else "the run records"
    out += ["", f"gaps for run dates {span} ({timezone}; expected units from {basis}):"]
    if not report.expected:
        out.append("  nothing expected: no endpoints known (no job file and no run records)")
    elif not report.gaps:
        due = sum(len(c.expected) for c in report.cells if c.due)
        later = sum(len(c.expected) - len(c.present) for c in report.cells if not c.due)
        out.append(f"  none: all {due} expected unit(s) are in the destination" + (f" ({later} not yet due)" if later else ""))
    by_endpoint: dict[str, list[Gap]] = {}
    for gap in report.gaps:
        by_endpoint.setdefault(gap.endpoint, []).append(gap)
    for endpoint, gaps in by_endpoint.items():
        whole = [g for g in gaps if len(g.missing) == g.expected]
        if whole:
            out.append(f"  {endpoint}: missing {', '.join(_day(g) for g in whole)}")
        for gap in (g for g in gaps if len(g.missing) < g.expected):
            out.append(f"  {endpoint}: {_day(gap)} incomplete, {len(gap.missing)} of {gap.expected} units missing:")
            out += [f"      {printable(unit)}" for unit in gap.missing[:limit]]  # fan-out values come from the vendor
            if len(gap.missing) > limit:
                out.append(f"      ... and {len(gap.missing) - limit} more")
    if report.gaps and job_path:
        out += ["", "to fill them:"] + [f"  {c}" for c in fill_commands(report.gaps, job_path)]
    if report.tables is not None:
        out += ["", "tables (rows in the current snapshot; dates whose partition is behind the raw zone):"]
        out += [f"  cannot read them: {report.tables_error}"] if report.tables_error else []
        out += [f"  {t.identifier}: {'not built' if t.rows is None else f'{t.rows:,} rows'}, "
                + (f"behind on {_dates(t.behind)}" if t.behind else "up to date") for t in report.tables]
        if report.behind and job_path:
            out.append(f"  to bring them up to date: apilake tables {job_path}")
    if report.quota:
        out += ["", "daily request quotas today (counted per credential across runs):"]
        for name, day, use in report.quota:
            limit = f" of {use['limit']}" if use.get("limit") else ""
            out.append(f"  {name}: {use.get('used', 0)}{limit} requests used or reserved (quota day {day})")
    return "\n".join(out)
