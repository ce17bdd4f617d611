"""`apilake status` as text, and the numbers of each run that it and the dashboard show."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from apilake.incremental import CursorState
from apilake.printable import printable
from apilake.record import RunRecord
from apilake.status.gaps import Gap, fill_commands
from apilake.status.report import StatusReport
from apilake.vocabulary import RunStatus


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One run record in numbers: what the run list of `status` and the dashboard show."""

    run_id: str
    status: RunStatus
    span: str  # the run dates, as `first..last`
    counts: dict[str, int]
    started: dt.datetime | None
    finished: dt.datetime | None
    bytes: int
    retries: int
    throttled: int  # 429 answers

    @property
    def seconds(self) -> float | None:
        return (self.finished - self.started).total_seconds() if self.started and self.finished else None

    @property
    def not_run(self) -> int:
        return self.counts.get("not_attempted", 0) + self.counts.get("interrupted", 0)


def summarize_run(record: RunRecord) -> RunSummary:
    return RunSummary(
        record.run_id,
        record.status,
        record.span,
        record.counts,
        record.started,
        record.finished,
        sum(u.bytes for u in record.units),
        sum(u.retries for u in record.units),
        sum(u.http.get("429", 0) for u in record.units),
    )


def run_rows(records: list[RunRecord], n: int) -> list[list[str]]:
    rows = [["run", "status", "dates", "landed", "skipped", "ignored", "failed", "not run", "started (UTC)", "duration"]]
    for run in map(summarize_run, reversed(records[-n:] if n > 0 else [])):
        rows.append(
            [
                run.run_id,
                run.status,
                run.span,
                str(run.counts.get("landed", 0)),
                str(run.counts.get("skipped", 0)),
                str(run.counts.get("ignored", 0)),
                str(run.counts.get("failed", 0)),
                str(run.not_run),
                f"{run.started.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}" if run.started else "-",
                "-" if run.seconds is None else f"{run.seconds:.1f}s",
            ]
        )
    return rows


def _day(gap: Gap) -> str:
    return gap.run_date + (f" (data date {gap.date})" if gap.date != gap.run_date else "")


def _dates(dates: Iterable[str], shown: int = 5) -> str:
    dates = sorted(dates)
    return ", ".join(dates[:shown]) + (f" and {len(dates) - shown} more" if len(dates) > shown else "")


def cursor_line(state: CursorState, now: dt.datetime) -> str:
    """One cursor: its value and how long ago it advanced, and a window still open (a run that
    did not finish it: the next run of that date reads it again)."""
    line = "none yet" if state.cursor is None else printable(state.cursor)
    if state.advanced is not None:
        line += f", advanced {_age(now - state.advanced)} ago"
    return line + (f"; window of {', '.join(state.unfinished)} not finished" if state.unfinished else "")


def _age(delta: dt.timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds // 86400} days"


def render(report: StatusReport, *, runs: int, job_path: str | None, timezone: str, limit: int = 20) -> str:
    from apilake.summary import table

    records = report.records
    out = [f"destination {report.destination}: {len(records)} run record(s)"]
    if records:
        out += ["", f"last {min(runs, len(records))} run(s), newest first:", table(run_rows(records, runs))]
        finished = [r for r in records if r.finished]
        shown = [records[-1]] + ([finished[-1]] if finished and finished[-1] is not records[-1] else [])
        for record in shown:
            problems = record.failures()
            out.append("")
            if record.status == "abandoned":
                out.append(f"run {record.run_id} was abandoned: its process died before it finished (its lock or lease is free); a rerun lands what it did not")
                continue
            if record.status == "running" and not record.finished:
                out.append(f"run {record.run_id} is still running")
                continue
            out.append(f"failures of run {record.run_id}: {len(problems) or 'none'}")
            for unit in problems[:limit]:
                out.append(f"  {unit.status.upper()} {printable(unit.unit)}: {printable(unit.error or 'no reason recorded')}")
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
        out += [
            f"  {t.identifier}: {'not built' if t.rows is None else f'{t.rows:,} rows'}, " + (f"behind on {_dates(t.behind)}" if t.behind else "up to date")
            for t in report.tables
        ]
        if report.behind and job_path:
            out.append(f"  to bring them up to date: apilake tables {job_path}")
    if report.cursors:
        out += ["", "incremental cursors (the newest value landed, and its age):"]
        out += [f"  {printable(state.identity)}: {cursor_line(state, dt.datetime.now(dt.UTC))}" for state in report.cursors]
    if report.quota:
        out += ["", "daily request quotas today (counted per credential across runs):"]
        for name, day, use in report.quota:
            of = f" of {use['limit']}" if use.get("limit") else ""
            out.append(f"  {name}: {use.get('used', 0)}{of} requests used or reserved (quota day {day})")
    return "\n".join(out)
