"""How long the dashboard takes to answer on a lake with many run records.

Builds a local lake with N run records (default 1,000: one run a day per endpoint group, 20 units
each, some failed, as `apilake run` writes them) and the objects of the last 14 days, then times
a served page: reading every record, checking the grid's keys, building the status model and
rendering the HTML (`Dashboard.index`), plus the `--html` single file and one run's page.

    .venv/bin/python bench/dashboard_render.py [--records 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from apilake.dashboard import render_page
from apilake.dashboard.server import Dashboard
from apilake.destinations import open_destination
from apilake.jobfile import load_job
from apilake.plan import plan
from apilake.record import LandedObject, RunRecord, UnitResult, write_record
from apilake.status import inspect, window

ENDPOINTS = {
    f"e{i}": {"name": f"e{i}", "kind": "json", "path": "/v1/{market}/{n}", "matrix": {"market": ["ios", "android"], "n": [1, 2, 3, 4, 5]}} for i in range(2)
}


def build(root: Path, records: int) -> tuple[Path, Path]:
    lake = root / "lake"
    job_path = root / "job.yaml"
    job_path.write_text(
        yaml.safe_dump(
            {
                "timezone": "UTC",
                "destination": str(lake),
                "sources": [{"name": "vendor", "base_url": "https://api.example.com", "endpoints": list(ENDPOINTS.values())}],
            }
        )
    )
    job = load_job(job_path)
    now = dt.datetime.now(dt.UTC)
    last = window("UTC", now, 1)[0]

    async def write() -> None:
        dest = open_destination(str(lake))
        try:
            for i in range(records):
                date = last - dt.timedelta(days=records - 1 - i)
                started = dt.datetime.combine(date + dt.timedelta(days=1), dt.time(9), dt.UTC)
                results = []
                for n, unit in enumerate(plan(job, [date])):
                    failed = (i + n) % 17 == 0
                    result = UnitResult(
                        unit.id,
                        unit.source,
                        unit.endpoint,
                        unit.date,
                        "json",
                        "failed" if failed else "landed",
                        url=unit.request_url,
                        attempts=1 if failed else 2,
                        seconds=0.4,
                        error="HTTP 500 Internal Server Error from https://api.example.com/v1" if failed else None,
                        started=started.isoformat(),
                        finished=(started + dt.timedelta(seconds=2)).isoformat(),
                        http={"500": 1} if failed else {"200": 1, "429": 1},
                        requests=2,
                    )
                    if not failed:
                        result.objects.append(LandedObject(unit.key, 40_000 + n, "0" * 64, 200, 2, 0.4))
                        if (last - date).days < 14:
                            await dest.put(unit.key, b"{}")
                    results.append(result)
                await write_record(
                    dest,
                    RunRecord(
                        run_id=f"{started:%Y%m%dT%H%M%S.%fZ}-{i:06x}",
                        job=str(job_path),
                        destination=str(lake),
                        dates=[date.isoformat()],
                        started=started,
                        finished=started + dt.timedelta(seconds=3),
                        status="failed" if any(r.error for r in results) else "succeeded",
                        units=results,
                        version="bench",
                    ),
                )
        finally:
            await dest.close()

    asyncio.run(write())
    return job_path, lake


def timed(fn, repeat: int) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        job_path, lake = build(Path(tmp), args.records)
        job = load_job(job_path)
        board = Dashboard(job, str(job_path), str(lake))
        now = dt.datetime.now(dt.UTC)
        dates = window("UTC", now, 14, ahead=1)
        report = inspect(str(lake), job, dates, window("UTC", now, 1)[0])
        run_id = report.records[-1].run_id
        rows = [
            ("served page: read records + status model + render", timed(board.index, args.repeat), len(board.index())),
            ("status model only (read records, check keys)", timed(lambda: inspect(str(lake), job, dates, dates[-2]), args.repeat), 0),
            ("render only (HTML from the model)", timed(lambda: render_page(report, job_path="job.yaml", timezone="UTC", generated=now), args.repeat), 0),
            (
                "--html single file (render)",
                timed(lambda: render_page(report, job_path="job.yaml", timezone="UTC", generated=now, single_file=True), args.repeat),
                len(render_page(report, job_path="job.yaml", timezone="UTC", generated=now, single_file=True)),
            ),
            ("one run's page", timed(lambda: board.run(run_id), args.repeat), 0),
        ]
    print(f"dashboard with {args.records} run records (20 units each), 2 endpoints × 15 run dates, median of {args.repeat}:")
    for name, (median, low, high), size in rows:
        print(f"  {name:<52} {median * 1000:8.1f} ms  (min {low * 1000:.1f}, max {high * 1000:.1f})" + (f"  {size / 1024:.0f} KiB" if size else ""))


if __name__ == "__main__":
    main()
