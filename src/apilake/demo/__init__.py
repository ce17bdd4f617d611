"""`apilake demo`: the bundled example job against the built-in emulator, into a local lake, then
its Iceberg tables built and queried as `apilake tables` and `apilake query` would."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import click

JOB_FILE = Path(__file__).with_name("job.yaml")
#: what the demo asks of its tables at the end: the day's downloads by country, from the bulk files
QUERY = (
    "SELECT country, sum(value) AS downloads, count(DISTINCT product_id) AS apps FROM dataai.bulk_metrics "
    "WHERE metric = 'downloads' GROUP BY country ORDER BY downloads DESC LIMIT 5"
)


def run_demo(dest: str, date: str | None) -> int:
    from apilake import logs
    from apilake.dates import run_dates
    from apilake.emulator import Emulator
    from apilake.jobfile import load_job
    from apilake.plan import plan
    from apilake.runner import run_job
    from apilake.sizes import human_bytes
    from apilake.summary import summarize
    from apilake.tables.query import run_query

    with Emulator() as emu:
        environ = {**os.environ, "DATAAI_BASE_URL": emu.api_url, "DATAAI_TOKEN": emu.config.token}
        job = load_job(JOB_FILE, environ=environ)
        dates = run_dates(job.timezone, dt.datetime.now(dt.UTC), date=date)
        click.echo(f"emulator: {emu.api_url} (files from {emu.files_url}); job: {JOB_FILE}; date: {dates[0]}")
        logs.setup()
        logs.set_secrets(job.secrets())
        report = run_job(job, plan(job, dates), job_path=str(JOB_FILE), dates=dates, destination=dest)
    click.echo("\nlanded:")
    for result in report.results:
        for obj in result.objects:
            click.echo(f"  {human_bytes(obj.bytes):>10}  {obj.key}")
    click.echo("\n" + summarize(report.results))
    click.echo(f"\nrun {report.run_id} {report.status}; lake: {Path(report.destination)}; record: {report.record_key}")
    if report.tables is not None:
        click.echo("\ntables (refreshed by the run):\n" + report.tables.summary())
    click.echo(f'\n$ apilake query JOB "{QUERY}"\n' + run_query(job, report.destination, QUERY, "table"))
    return report.exit_code
