"""The `apilake` command. The one place where errors become messages and exit codes.

Exit codes: 0 every unit landed (or had landed before); 1 at least one unit failed or was not
attempted; 2 bad job file, bad option, or unusable destination; 3 another run of the same job
and destination is going; 130 interrupted (SIGINT/SIGTERM).
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Any

import click

from apilake.errors import ApilakeError, DestinationError

EXIT_USAGE = 2


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DestinationError as exc:
            click.echo(f"apilake: error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except ApilakeError as exc:
            click.echo(f"apilake: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("apilake: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="apilake")
def main() -> None:
    """Land raw API responses and bulk files in a data lake, exactly once, from one job file."""


job_argument = click.argument("job_file", metavar="JOB.yaml", type=click.Path(dir_okay=False))
profile_option = click.option("--profile", envvar="APILAKE_PROFILE", help="Overlay profiles.NAME of the job file (or $APILAKE_PROFILE).")


def _load(job_file: str, profile: str | None) -> Any:
    from apilake.jobfile import load_job

    return load_job(job_file, profile=profile)


@main.command()
@job_argument
@click.option("--date", "date", metavar="YYYY-MM-DD", help="Run for this date (default: yesterday in the job's timezone).")
@click.option("--from", "start", metavar="YYYY-MM-DD", help="Backfill: first date (inclusive).")
@click.option("--to", "end", metavar="YYYY-MM-DD", help="Backfill: last date (inclusive).")
@click.option("--only", multiple=True, metavar="ENDPOINT", help="Run only this endpoint or source (repeatable).")
@click.option("--dest", metavar="URL", help="Override the destination (a folder or s3://bucket/prefix).")
@click.option("--dry-run", is_flag=True, help="Print every unit and its key; touch no network and no destination.")
@click.option("--force", is_flag=True, help="Fetch and land again what already landed.")
@profile_option
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--log-file", type=click.Path(dir_okay=False), help="Also log to this file, rotated daily.")
@click.option("-v", "--verbose", is_flag=True, help="Log every landed object.")
def run(job_file: str, date: str | None, start: str | None, end: str | None, only: tuple[str, ...], dest: str | None,
        dry_run: bool, force: bool, profile: str | None, log_format: str, log_file: str | None, verbose: bool) -> None:
    """Fetch every unit of JOB.yaml for the run date(s) and land it in the destination."""
    from apilake import logs
    from apilake.dates import run_dates
    from apilake.plan import plan

    job = _load(job_file, profile)
    dates = run_dates(job.timezone, dt.datetime.now(dt.timezone.utc), date=date, start=start, end=end)
    units = plan(job, dates, only)
    if dry_run:
        from apilake.redact import Redactor

        _print_plan(units, dest or job.destination, Redactor(job.secrets()))
        return
    from apilake.runner import run_job
    from apilake.summary import summarize

    logs.setup(fmt=log_format, level=logging.DEBUG if verbose else logging.INFO, log_file=log_file)
    logs.set_secrets(job.secrets())
    report = run_job(job, units, job_path=job_file, dates=dates, destination=dest, force=force)
    click.echo(summarize(report.results))
    click.echo(f"\nrun {report.run_id} {report.status}; record: {report.destination.rstrip('/')}/{report.record_key}")
    sys.exit(report.exit_code)


def _print_plan(units: list[Any], destination: str, redact: Any) -> None:
    for unit in units:
        target = unit.key if unit.kind == "json" else f"{unit.key}  (per listed file)"
        click.echo(redact(f"{unit.id}\n    GET {unit.request_url}\n    -> {target}"))
    click.echo(f"{len(units)} unit(s) into {destination}")


@main.command()
@job_argument
@profile_option
def validate(job_file: str, profile: str | None) -> None:
    """Check JOB.yaml and report every problem with its key path."""
    job = _load(job_file, profile)
    endpoints = sum(len(s.endpoints) for s in job.sources)
    click.echo(f"{job_file}: valid ({len(job.sources)} source(s), {endpoints} endpoint(s), destination {job.destination})")


@main.command()
@click.option("--dest", default="./lake", show_default=True, metavar="DIR", help="Where the demo lands its objects.")
@click.option("--date", metavar="YYYY-MM-DD", help="Run date (default: yesterday in the job's timezone).")
def demo(dest: str, date: str | None) -> None:
    """Run the bundled example job against the built-in emulator into a local lake."""
    from apilake.demo import run_demo

    sys.exit(run_demo(dest, date))


@main.command()
@click.option("--port", default=8080, show_default=True, type=int, help="API port (0: any free port).")
@click.option("--files-port", default=0, type=int, help="Port of the second origin serving files (0: any).")
@click.option("--latency-ms", default=0.0, type=float, help="Delay added to every API response.")
@click.option("--requests-per-minute", type=int, help="Answer 429 above this many calls in any 60 s.")
@click.option("--file-size", default=64 * 1024, show_default=True, type=int, help="Bytes per bulk file.")
@click.option("--metric-files", default=2, show_default=True, type=int, help="Metric files per bundle and date.")
def emulator(port: int, files_port: int, latency_ms: float, requests_per_minute: int | None, file_size: int, metric_files: int) -> None:
    """Serve the vendor emulator on 127.0.0.1 until stopped (token: demo-token)."""
    from apilake.emulator import EmulatorConfig, serve

    config = EmulatorConfig(latency_ms=latency_ms, requests_per_minute=requests_per_minute, file_size=file_size, metric_files=metric_files)
    serve(api_port=port, files_port=files_port, config=config)


if __name__ == "__main__":  # pragma: no cover
    main()
