"""The dashboard: the facts of `apilake status` as a web page, read-only.

`render_page` draws the grid of endpoints × run dates (from `status.StatusReport`, the model
`apilake status` prints), the recent runs, charts and the commands that fill the gaps;
`render_run` draws one run's every unit. Pages are self-contained HTML: the style sheet is
inlined and the charts are inline SVG, so they work with no network and can be saved as one
file (`single_file=True` puts the run details into the page as sections instead of links).
Everything shown comes from run records, which never hold a secret; Jinja escapes all of it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from apilake.dashboard import charts
from apilake.record import RunRecord, UnitResult
from apilake.sizes import human_bytes
from apilake.status.gaps import Cell, fill_commands
from apilake.status.report import StatusReport
from apilake.status.text import RunSummary, summarize_run
from apilake.summary import wall_seconds

__all__ = ["render_page", "render_run"]

RECENT_RUNS = 30  # listed under "recent runs"
CHART_RUNS = 60  # the newest runs drawn in the charts

_env = Environment(loader=PackageLoader("apilake.dashboard", "templates"), autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
_env.filters["bytes"] = human_bytes
_env.filters["seconds"] = lambda s: "-" if s is None else f"{s:.1f}s"
_env.filters["utc"] = lambda t: "-" if t is None else f"{t.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}"


def anchor(*parts: str) -> str:
    """An HTML id from unit-ish text: letters, digits and `-` only."""
    return re.sub(r"[^A-Za-z0-9]+", "-", "-".join(parts)).strip("-")


@dataclass(frozen=True, slots=True)
class Grid:
    endpoints: list[str]
    dates: list[str]
    cells: dict[tuple[str, str], Cell]

    @classmethod
    def of(cls, cells: Iterable[Cell]) -> Grid:
        by_key = {(c.endpoint, c.run_date): c for c in cells}
        return cls(sorted({e for e, _ in by_key}), sorted({d for _, d in by_key}), by_key)


def render_page(report: StatusReport, *, job_path: str, timezone: str, generated: dt.datetime, single_file: bool = False) -> str:
    """The dashboard's main page; with `single_file`, also every run it refers to, as in-page sections."""
    records = report.records
    recent = [summarize_run(r) for r in reversed(records[-RECENT_RUNS:])]
    detailed: list[RunRecord] = []
    if single_file:
        wanted = {r.run_id for r in recent} | {a.run_id for c in report.cells for _, a in c.attempts}  # every run linked to
        detailed = [r for r in reversed(records) if r.run_id in wanted]
    return _env.get_template("page.html").render(
        report=report,
        grid=Grid.of(report.cells),
        recent=recent,
        charts=_charts(records[-CHART_RUNS:]),
        fill=fill_commands(report.gaps, job_path),
        job_path=job_path,
        timezone=timezone,
        generated=generated,
        single_file=single_file,
        detailed=[_run_view(r) for r in detailed],
        run_href=(lambda run_id: f"#run-{anchor(run_id)}") if single_file else (lambda run_id: f"runs/{run_id}"),
        anchor=anchor,
    )


def render_run(record: RunRecord, *, generated: dt.datetime) -> str:
    """One run's page: every unit with its status, keys, bytes, seconds, attempts and error."""
    return _env.get_template("run.html").render(run=_run_view(record), generated=generated, anchor=anchor)


def _run_view(record: RunRecord) -> dict[str, Any]:
    return {"summary": summarize_run(record), "job": record.job, "units": record.units}


def _charts(records: list[RunRecord]) -> dict[str, Any]:
    runs: list[RunSummary] = [summarize_run(r) for r in records]
    labels = [f"{r.started:%m-%d %H:%M}" if r.started else r.run_id for r in runs]
    endpoints = sorted({e for r in records for e in r.endpoints})
    per_endpoint_bytes: dict[str, list[float | None]] = {e: [] for e in endpoints}
    per_endpoint_time: dict[str, list[float | None]] = {e: [] for e in endpoints}
    for record in records:
        mine: dict[str, list[UnitResult]] = {}
        for unit in record.units:
            mine.setdefault(f"{unit.source}/{unit.endpoint}", []).append(unit)
        for endpoint in endpoints:
            units = mine.get(endpoint)
            per_endpoint_bytes[endpoint].append(sum(u.bytes for u in units) if units else None)
            per_endpoint_time[endpoint].append(wall_seconds(units) if units else None)
    seconds = lambda v: f"{v:.1f}s"  # noqa: E731
    count = lambda v: f"{v:.0f}"  # noqa: E731
    return {
        "runs": len(runs),
        "endpoints": charts.legend(endpoints),
        "bytes": charts.bars("bytes landed per run", labels, {"bytes": [r.bytes for r in runs]}, human_bytes),
        "duration": charts.bars("duration per run", labels, {"duration": [r.seconds or 0 for r in runs]}, seconds),
        "retries": charts.bars("retries and 429s per run", labels, {"retries": [r.retries for r in runs], "429s": [r.throttled for r in runs]}, count),
        "retries_legend": charts.legend(["retries", "429s"]),
        "endpoint_bytes": charts.lines("bytes per endpoint per run", labels, per_endpoint_bytes, human_bytes),
        "endpoint_time": charts.lines("wall time per endpoint per run", labels, per_endpoint_time, seconds),
    }
