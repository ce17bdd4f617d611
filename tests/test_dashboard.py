"""The dashboard's pages from a status model: escaping, empty lakes, charts (unit tests; the browser tests are e2e)."""

from __future__ import annotations

import datetime as dt
import re

from apilake.dashboard import charts, render_page, render_run
from apilake.record import RunRecord, parse_record
from apilake.status import Attempt, Cell, Gap, Problem, StatusReport

NOW = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)
HOSTILE = '<script>alert("x")</script>'


def record(run_id: str, error: str) -> RunRecord:
    unit = {
        "unit": "s/e/2026-11-25",
        "source": "s",
        "endpoint": "e",
        "date": "2026-11-25",
        "kind": "json",
        "status": "failed",
        "error": error,
        "objects": [],
        "attempts": 3,
        "seconds": 1.5,
        "http": {"503": 3},
        "requests": 3,
        "started": "2026-11-26T09:00:00+00:00",
        "finished": "2026-11-26T09:00:04+00:00",
    }
    return parse_record(
        {
            "run_id": run_id,
            "status": "failed",
            "dates": ["2026-11-25"],
            "started": "2026-11-26T09:00:00+00:00",
            "finished": "2026-11-26T09:00:05+00:00",
            "counts": {"failed": 1},
            "job": "job.yaml",
            "units": [unit],
        }
    )


def test_an_empty_lake_renders() -> None:
    report = StatusReport("./lake", [], [dt.date(2026, 11, 26)], {}, [], [])
    page = render_page(report, job_path="job.yaml", timezone="UTC", generated=NOW)
    assert "nothing expected: no endpoints known" in page and "nothing to fill" in page


def test_everything_from_records_is_escaped() -> None:
    run = record("20261126T090000.000000Z-abcdef", HOSTILE)
    cell = Cell("s/e", "2026-11-25", ("s/e/2026-11-25",), (), True, (("s/e/2026-11-25", Attempt(run.run_id, (Problem("s/e/2026-11-25", "failed", HOSTILE),))),))
    report = StatusReport(
        "./lake", [run], [dt.date(2026, 11, 25)], {("s/e", "2026-11-25"): {"s/e/2026-11-25"}}, [Gap("s/e", "2026-11-25", ("s/e/2026-11-25",), 1)], [cell]
    )
    for page in (render_page(report, job_path="job.yaml", timezone="UTC", generated=NOW, single_file=True), render_run(run, generated=NOW)):
        assert HOSTILE not in page and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
        assert "<script" not in page
    page = render_page(report, job_path="job.yaml", timezone="UTC", generated=NOW, single_file=True)
    assert 'data-state="failed"' in page and f'href="#run-{run.run_id.replace(".", "-")}"' in page
    assert "apilake run job.yaml --date 2026-11-25 --only e" in page


def test_bars_scale_to_the_largest_value_and_label_each_bar() -> None:
    svg = charts.bars("bytes", ["a", "b"], {"bytes": [50, 100]}, str)
    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)"', svg)]
    assert heights[1] == 2 * heights[0] > 0
    assert "<title>a bytes: 50</title>" in svg and "<title>b bytes: 100</title>" in svg


def test_lines_break_where_a_value_is_missing() -> None:
    svg = charts.lines("t", ["1", "2", "3", "4", "5"], {"e": [1, 2, None, 3, 4]}, str)
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 4
