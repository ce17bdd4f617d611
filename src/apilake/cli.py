"""The `apilake` command. The one place where errors become messages and exit codes.

Exit codes (`errors.ExitCode`): 0 every unit landed (or had landed before); 1 at least one unit
failed or was not attempted, the run's table refresh failed, or the final run record could not be
written; 2 bad job file, bad option, unusable destination or address; 3 another run of the same
job and destination is going; 130 interrupted (SIGINT/SIGTERM).

Process-wide effects live here, not in the library: the signal handlers that interrupt a run,
and freezing what is imported out of the garbage collector's way.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from apilake.errors import ApilakeError, DestinationError, ExitCode

if TYPE_CHECKING:
    from collections.abc import Callable

    from apilake.record import RunRecord
    from apilake.runner import RunReport


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApilakeError as exc:
            _error(exc)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("apilake: interrupted", err=True)
            sys.exit(ExitCode.INTERRUPTED)


def _error(exc: ApilakeError) -> None:
    """The message of an error, each of its lines made printable (a job file's error lists several)."""
    from apilake.printable import printable

    click.echo("apilake: error: " + "\n".join(printable(line) for line in str(exc).split("\n")), err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="apilake")
def main() -> None:
    """Land raw API responses and bulk files in a data lake, exactly once, from one job file."""
    _lean_start_up()


def entry() -> None:
    """The `apilake` console script: `main`, then, once obstore's Rust runtime has run (an S3
    destination), leave without the interpreter's teardown. Its worker threads may still hand a
    result to Python while Python finalizes, and Python 3.11 ends such a thread in a way Rust
    turns into SIGABRT: exit code 134 in place of the run's own (5 of 16 runs of 20 uploads,
    `bench/results/s3_clients.md`). Output and log files are flushed first; apilake registers nothing
    else to run at exit."""
    try:
        main()
    except SystemExit as exc:
        if "obstore" not in sys.modules:
            raise
        code = exc.code
    else:  # pragma: no cover - click's standalone mode always ends in SystemExit
        code = 0
    if isinstance(code, str):
        print(code, file=sys.stderr)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed pipe: nothing more can be said there
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


def _lean_start_up() -> None:
    """Skip two start-up costs that the CLI's process never needs (~40 ms of each run on a 2-core
    machine, `bench/`): pydantic's scan of every installed distribution for validation plugins,
    and httpx's own command-line client, which httpx imports (with rich's console) when it can.
    (Not trio, which httpcore imports where it is installed: httpcore also uses it later, when
    a request fails.)"""
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]  # `import httpx` then falls back


def _freeze_imports() -> None:
    """Everything imported so far lives as long as the process: keep it out of the garbage
    collector's full passes, which otherwise rescan it every few thousand allocations. Once per
    process: each freeze also makes permanent whatever garbage is waiting to be collected."""
    import gc

    import apilake.runner  # noqa: F401 - a run's own modules (fetch, executors, destinations) belong to the start-up too

    gc.freeze()


def _run_in_process(job: Any, units: list[Any], **options: Any) -> RunReport:
    """`runner.arun_job` on its own event loop, which SIGINT and SIGTERM interrupt (the run ends
    `interrupted`, exit 130, its record written); the handlers before it are restored after."""
    import asyncio
    import signal

    from apilake.runner import RunControl, arun_job

    control = RunControl()
    signals = (signal.SIGINT, signal.SIGTERM)

    def interrupt(signum: int) -> None:
        name = signal.Signals(signum).name
        logging.getLogger("apilake").warning("%s received: stopping; in-flight transfers are discarded", name)
        control.interrupt(name)

    async def run() -> RunReport:
        loop = asyncio.get_running_loop()
        for signum in signals:
            loop.add_signal_handler(signum, interrupt, signum)
        try:
            return await arun_job(job, units, control=control, **options)
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)

    previous = {signum: signal.getsignal(signum) for signum in signals}  # a scheduler's own
    try:
        return asyncio.run(run())
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


job_argument = click.argument("job_file", metavar="JOB.yaml", type=click.Path(dir_okay=False))
profile_option = click.option("--profile", envvar="APILAKE_PROFILE", help="Overlay profiles.NAME of the job file (or $APILAKE_PROFILE).")
dest_option = click.option("--dest", metavar="URL", help="Override the destination (a folder or s3://bucket/prefix).")


def _load(job_file: str, profile: str | None, *, offline: bool = False) -> Any:
    from apilake.jobfile import load_job

    return load_job(job_file, profile=profile, offline=offline)


@main.command()
@job_argument
@click.option("--date", "date", metavar="YYYY-MM-DD", help="Run for this date (default: yesterday in the job's timezone).")
@click.option("--from", "start", metavar="YYYY-MM-DD", help="Backfill: first date (inclusive).")
@click.option("--to", "end", metavar="YYYY-MM-DD", help="Backfill: last date (inclusive).")
@click.option("--only", multiple=True, metavar="ENDPOINT", help="Run only this endpoint or source (repeatable).")
@dest_option
@click.option("--dry-run", is_flag=True, help="Print every unit and its key; touch no network and no destination.")
@click.option("--force", is_flag=True, help="Fetch and land again what already landed.")
@profile_option
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--log-file", type=click.Path(dir_okay=False), help="Also log to this file, rotated daily.")
@click.option("-v", "--verbose", is_flag=True, help="Log every landed object.")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no info lines: warnings, errors and the summary only (for cron).")
@click.option(
    "--executor", type=click.Choice(["local", "dask"]), help="Where units run: this process, or a Dask cluster (default: the job's `executor`, else local)."
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="Dask scheduler to submit units to, e.g. tcp://HOST:8786 (default: the job's `scheduler_address`); implies --executor dask.",
)
@click.option(
    "--metrics-file",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="After the run, write Prometheus metrics here, atomically (node_exporter's textfile collector: *.prom).",
)
def run(
    job_file: str,
    date: str | None,
    start: str | None,
    end: str | None,
    only: tuple[str, ...],
    dest: str | None,
    dry_run: bool,
    force: bool,
    profile: str | None,
    log_format: str,
    log_file: str | None,
    verbose: bool,
    quiet: bool,
    executor: str | None,
    scheduler: str | None,
    metrics_file: str | None,
) -> None:
    """Fetch every unit of JOB.yaml for the run date(s) and land it in the destination."""
    from apilake import logs
    from apilake.dates import run_dates
    from apilake.plan import pending_children

    job = _load(job_file, profile, offline=dry_run)
    dates = run_dates(job.timezone, dt.datetime.now(dt.UTC), date=date, start=start, end=end)
    units = _plan(job, dates, only, dest, write=not dry_run)
    if dry_run:
        from apilake.redact import Redactor

        _print_plan(units, dest or job.destination, Redactor(job.secrets()), pending_children(job, dates, only))
        return
    from apilake.progress import Progress
    from apilake.summary import summarize

    logs.setup(fmt=log_format, level=logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO, log_file=log_file)
    logs.set_secrets(job.secrets())
    progress = Progress(len(units), quiet=quiet)
    _freeze_imports()
    try:
        report = _run_in_process(
            job,
            units,
            job_path=job_file,
            dates=dates,
            destination=dest,
            force=force,
            on_result=progress.on_result,
            executor=executor,
            scheduler=scheduler,
            only=only,
        )
    finally:
        progress.close()
    click.echo(summarize(report.results))
    record = f"{report.destination.rstrip('/')}/{report.record_key}"
    if report.record_error:
        record += (
            f" could not be finished ({report.record_error}): it stays 'running' and 'apilake status' shows the run "
            "as abandoned; what landed above is in the destination, and a rerun skips it"
        )
    if report.tables is not None:
        if report.tables.error:
            click.echo(f"apilake: error: tables not refreshed: {report.tables.error}", err=True)
        else:
            click.echo("\ntables:\n" + report.tables.summary())
    click.echo(f"\nrun {report.run_id} {report.status}; record: {record}")
    from apilake.outcome import follow_up

    follow_up(job, job_file, report.run_id, report.destination, metrics_file=metrics_file)  # after the refresh: rows per table
    sys.exit(report.exit_code)


def _plan(job: Any, dates: list[dt.date], only: tuple[str, ...], dest: str | None, *, write: bool = True) -> list[Any]:
    """The run's units: the windows of incremental units are read (a new one recorded, unless a
    dry run) in the destination first, then the pure planner takes them."""
    from apilake.incremental import job_windows
    from apilake.plan import incremental_units, plan

    return plan(job, dates, only, job_windows(job, dest, incremental_units(job, dates, only), write=write))


def _print_plan(units: list[Any], destination: str, redact: Any, pending: list[str]) -> None:
    lines = []
    for unit in units:
        target = unit.key if unit.kind in ("json", "file") else f"{unit.key}  (per listed file)"
        lines.append(f"{unit.id}\n    {unit.method} {unit.request_url}\n    -> {target}")
    if lines or pending:
        click.echo(redact("\n".join([*lines, *pending])))  # one write, not one per unit: plans run to 10,000s
    click.echo(f"{len(units)} unit(s) into {destination}" + (f", and the children of {len(pending)} fan-out(s) pending on their parents" if pending else ""))


@main.command()
@job_argument
@click.option("--date", "date", metavar="YYYY-MM-DD", help="Only this date's partitions.")
@click.option("--from", "start", metavar="YYYY-MM-DD", help="First date (inclusive).")
@click.option("--to", "end", metavar="YYYY-MM-DD", help="Last date (inclusive).")
@click.option("--only", multiple=True, metavar="ENDPOINT", help="Only the tables of this endpoint or source (repeatable).")
@click.option("--force", is_flag=True, help="Rebuild partitions whose raw objects did not change too.")
@dest_option
@profile_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def tables(
    job_file: str, date: str | None, start: str | None, end: str | None, only: tuple[str, ...], force: bool, dest: str | None, profile: str | None, quiet: bool
) -> None:
    """Build or refresh JOB.yaml's Iceberg tables from what is in the lake (all landed dates by default).

    Each date's partition is rebuilt from all its raw objects and replaced in one commit per
    table; a date whose raw objects did not change is left alone. Exit code: 0 every partition
    built or unchanged, 1 a partition or table failed, 2 bad job file or option, 3 a run of the job is going.
    """
    from apilake.dates import run_dates
    from apilake.destinations import open_destination
    from apilake.errors import JobFileError
    from apilake.lease import job_hold
    from apilake.record import new_run_id
    from apilake.tables import build_tables, iso, selection
    from apilake.tables.catalog import catalog_properties

    job = _load(job_file, profile, offline=True)
    if job.tables is None:
        raise JobFileError(f"{job_file}: no `tables:` block (add `tables: {{}}` for a local lake's defaults)")
    dates = iso(run_dates(job.timezone, dt.datetime.now(dt.UTC), date=date, start=start, end=end)) if date or start or end else None
    selected = selection(job, only)
    destination = open_destination(dest or job.destination, job.s3)
    url = destination.url
    catalog_properties(job, url)  # an S3 lake without a catalog: a clear error, also when nothing has landed yet
    bar = _PartitionBar(quiet)
    try:
        with job_hold(job, job_file, destination, "tables-" + new_run_id(dt.datetime.now(dt.UTC))) as held:
            report = build_tables(job, url, dates=dates, selected=selected, force=force, on_plan=bar.start, on_partition=bar.advance, stopped=held.why_lost)
    finally:
        bar.close()
    click.echo(report.summary())
    sys.exit(report.exit_code)


class _PartitionBar:
    """A progress bar of partitions built, on a terminal only."""

    def __init__(self, quiet: bool) -> None:
        self.bar: Any = None
        self.quiet = quiet or not sys.stderr.isatty()

    def start(self, total: int) -> None:
        if self.quiet or not total:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("[bold]partitions"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=Console(file=sys.stderr))
        self.task = self.bar.add_task("tables", total=total)
        self.bar.start()

    def advance(self, _partition: Any) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@main.command()
@job_argument
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@dest_option
@profile_option
def query(job_file: str, sql: str, fmt: str, dest: str | None, profile: str | None) -> None:
    """Run SQL with DuckDB over JOB.yaml's tables, addressed as source.endpoint (their current snapshots)."""
    from apilake.destinations import open_destination
    from apilake.errors import JobFileError
    from apilake.tables.query import run_query

    job = _load(job_file, profile, offline=True)
    if job.tables is None:
        raise JobFileError(f"{job_file}: no `tables:` block: there are no tables to query")
    click.echo(run_query(job, open_destination(dest or job.destination, job.s3).url, sql, fmt))


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
@click.option(
    "--acme-auth",
    type=click.Choice(["bearer", "api_key_header", "api_key_query", "basic", "oauth2"]),
    default="oauth2",
    show_default=True,
    help="The auth scheme the second vendor (Acme, under /acme/) accepts.",
)
def emulator(port: int, files_port: int, latency_ms: float, requests_per_minute: int | None, file_size: int, metric_files: int, acme_auth: str) -> None:
    """Serve the vendor emulator on 127.0.0.1 until stopped (token: demo-token)."""
    from apilake.emulator import EmulatorConfig, serve

    config = EmulatorConfig(latency_ms=latency_ms, requests_per_minute=requests_per_minute, file_size=file_size, metric_files=metric_files)
    serve(api_port=port, files_port=files_port, config=config, acme_auth=acme_auth)


@main.command()
@job_argument
@profile_option
@dest_option
@click.option(
    "--state-file",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="Where the last handled fire of each schedule is kept (default: $XDG_STATE_HOME or ~/.local/state, apilake/schedule-<hash>.json).",
)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--log-file", type=click.Path(dir_okay=False), help="Also log to this file, rotated daily.")
@click.option("--http", "http_address", metavar="HOST:PORT", help="Serve /metrics (Prometheus), /healthz and the dashboard here, e.g. 127.0.0.1:9464.")
def schedule(
    job_file: str, profile: str | None, dest: str | None, state_file: str | None, log_format: str, log_file: str | None, http_address: str | None
) -> None:
    """Run JOB.yaml on its `schedule:` crons (in the job's timezone) until SIGTERM/SIGINT.

    Runs are sequential; each is for yesterday in the job's timezone at its fire time. After
    downtime, up to `catch_up:` missed fires per schedule run, oldest first. A signal between
    runs stops at once (exit 0); during a run it interrupts the run (exit 130), which the next
    start makes up.
    """
    from apilake import logs
    from apilake.errors import JobFileError
    from apilake.schedule import Scheduler, default_state_path

    job = _load(job_file, profile)
    destination = dest or job.destination
    logs.setup(fmt=log_format, level=logging.INFO, log_file=log_file)
    logs.set_secrets(job.secrets())
    log = logging.getLogger("apilake")

    from apilake.outcome import follow_up
    from apilake.record import RecordCache, load_records

    records: list[list[RunRecord]] = [[]]  # the latest snapshot of the run records, for /metrics
    cache: RecordCache = {}

    def refresh() -> list[RunRecord]:
        try:
            records[0] = load_records(destination, job.s3, cache)
        except (ApilakeError, OSError) as exc:
            log.warning("cannot read the run records of %s: %s", destination, exc)
        return records[0]

    def run_once(only: list[str] | None, run_date: dt.date) -> int:
        try:
            selection = tuple(only or ())
            report = _run_in_process(
                job, _plan(job, [run_date], selection, destination), job_path=job_file, dates=[run_date], destination=destination, only=selection
            )
        except ApilakeError as exc:
            log.error("run for %s: %s", run_date, exc)
            return exc.exit_code
        bad = len(report.failures())
        log.info("run %s for %s %s: %d result(s), %d not landed", report.run_id, run_date, report.status, len(report.results), bad)
        if report.tables is not None and not report.tables.error:
            log.info("run %s tables:\n%s", report.run_id, report.tables.summary())
        follow_up(job, job_file, report.run_id, destination, records=refresh() if http_address or job.notify else None)
        return report.exit_code

    local = not destination.startswith("s3://")
    where = str(Path(destination.removeprefix("file://")).expanduser().absolute()) if local else destination
    state = Path(state_file) if state_file else default_state_path(job_file, where)
    scheduler = Scheduler(job, run_once, state_path=state)
    if not scheduler.schedules:
        raise JobFileError(f"{job_file}: no `schedule:` (at the top level or on an endpoint): nothing to schedule")
    click.echo(f"scheduling {Path(job_file).resolve()} (timezone {job.timezone}) into {destination}; state: {state}")
    for sched, fire in scheduler.upcoming():
        utc = fire.astimezone(dt.UTC)
        click.echo(f"  {sched.expression:<20} {sched.describe():<30} next {fire:%Y-%m-%d %H:%M %Z} ({utc:%Y-%m-%d %H:%M} UTC)")
    _freeze_imports()  # before serving: /healthz says "stalled" until the loop below first wakes
    scheduler.install_signal_handlers()
    server = _schedule_server(http_address, job, job_file, destination, scheduler, lambda: records[0]) if http_address else None
    if server is not None:
        refresh()
        server.start()
        click.echo(f"serving {server.url}metrics, {server.url}healthz and the dashboard at {server.url}")
    try:
        scheduler.run_forever()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    sys.exit(ExitCode.INTERRUPTED if scheduler.interrupted else ExitCode.OK)


def _schedule_server(address: str, job: Any, job_file: str, destination: str, scheduler: Any, records: Callable[[], list[RunRecord]]) -> Any:
    """The scheduler's HTTP server: /metrics, /healthz and the dashboard."""
    import json

    from apilake.dashboard.server import Dashboard
    from apilake.errors import JobFileError
    from apilake.metrics import RunCollector, SchedulerCollector, exposition, quota_today, registry, tables_now

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise JobFileError(f"--http {address!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    upcoming = lambda: [(s.key, fire) for s, fire in scheduler.upcoming()]  # noqa: E731
    quota = lambda: quota_today(job, destination)  # noqa: E731 - read at every scrape: other runs and hosts spend it too
    tables = lambda: tables_now(job, destination, records())  # noqa: E731 - read at every scrape, as the quota
    metrics = registry(RunCollector(job, job_file, records, quota, tables), SchedulerCollector(job_file, upcoming, lambda: scheduler.last_tick))

    def healthz() -> tuple[int, str, bytes]:
        ok, detail = scheduler.health()
        return (200 if ok else 503), "application/json", json.dumps(detail).encode()

    routes = {"/metrics": lambda: (200, "text/plain; version=0.0.4; charset=utf-8", exposition(metrics)), "/healthz": healthz}
    return _http_server(host.strip("[]"), int(port), Dashboard(job, job_file, destination), routes)


@main.command()
@job_argument
@profile_option
@click.option("--host-timezone", metavar="ZONE", help="The zone the host's cron uses (default: this machine's, from $TZ or /etc/localtime).")
def cron(job_file: str, profile: str | None, host_timezone: str | None) -> None:
    """Print crontab lines running JOB.yaml on its schedules, converted to the host's zone.

    A schedule with no exact host-zone equivalent all year (DST rules differ, or days shift
    across midnight) is printed under CRON_TZ=<job zone> (cronie) instead.
    """
    from apilake.schedule import crontab

    job = _load(job_file, profile, offline=True)
    program = Path(sys.executable).parent / "apilake"
    click.echo(crontab(job, job_file, host_timezone=host_timezone, profile=profile, program=str(program) if program.exists() else "apilake"), nl=False)


@main.command()
@click.argument("job_file", metavar="[JOB.yaml]", required=False, type=click.Path(dir_okay=False))
@click.option("--dest", metavar="URL", help="The destination to inspect (default: the job's).")
@profile_option
@click.option("--from", "start", metavar="YYYY-MM-DD", help="First run date of the gap report (inclusive).")
@click.option("--to", "end", metavar="YYYY-MM-DD", help="Last run date of the gap report (inclusive).")
@click.option("--runs", default=10, show_default=True, type=click.IntRange(min=0), help="How many recent runs to list.")
@click.option(
    "--html", "html_file", type=click.Path(dir_okay=False), metavar="FILE", help="Also write the dashboard as one self-contained HTML file (needs JOB.yaml)."
)
def status(job_file: str | None, dest: str | None, profile: str | None, start: str | None, end: str | None, runs: int, html_file: str | None) -> None:
    """Recent runs, the latest failures, and the dates of each endpoint missing from the destination.

    Gaps cover the last 7 run dates ending yesterday in the job's timezone (UTC without a job
    file), or --from/--to. With JOB.yaml, expected units come from the job; without it, from the
    run records. Exit code: 0 no gaps, 1 gaps found or a table behind the raw zone (a job with `tables:`),
    2 bad job file, option or destination.
    """
    from apilake.dates import run_dates
    from apilake.errors import JobFileError
    from apilake.status import inspect, render, window

    job = _load(job_file, profile, offline=True) if job_file else None
    url = dest or (job.destination if job else None)
    if url is None:
        raise JobFileError("status needs JOB.yaml or --dest URL")
    if html_file and job is None:
        raise JobFileError("status --html needs JOB.yaml: the dashboard shows the job's expected units")
    timezone = job.timezone if job else "UTC"
    now = dt.datetime.now(dt.UTC)
    dates = run_dates(timezone, now, start=start, end=end) if start or end else window(timezone, now, 7)
    last_due = window(timezone, now, 1)[0]
    report = inspect(url, job, dates, last_due)
    if job is None and not report.records:
        raise DestinationError(f"{url}: no run records under _apilake/runs/ (not an apilake destination, or nothing ran yet)")
    click.echo(render(report, runs=runs, job_path=job_file, timezone=timezone))
    if html_file and job_file:
        from apilake.dashboard import render_page

        page = render_page(report, job_path=job_file, timezone=timezone, generated=now, single_file=True)
        _write_file(html_file, page)
        click.echo(f"\ndashboard written to {html_file}")
    sys.exit(report.exit_code)


def _write_file(path: str, text: str) -> None:
    """Write a whole file or report why not (exit 2), never a traceback."""
    from apilake.errors import JobFileError

    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise JobFileError(f"{path}: cannot write it ({exc.strerror or exc})") from None


@main.command()
@job_argument
@profile_option
@click.option("--dest", metavar="URL", help="The destination to show (default: the job's).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback: only this machine).")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free port).")
@click.option("--from", "start", metavar="YYYY-MM-DD", help="First run date of the grid (default: 13 days before today).")
@click.option("--to", "end", metavar="YYYY-MM-DD", help="Last run date of the grid (inclusive).")
def dashboard(job_file: str, profile: str | None, dest: str | None, host: str, port: int, start: str | None, end: str | None) -> None:
    """Serve a read-only web page of JOB.yaml's runs and gaps until stopped.

    A grid of endpoints × run dates (landed, partly landed, failed, missing, not yet due), the
    recent runs and each run's units, charts over time, and the commands that fill the gaps.
    It needs no API token and changes nothing in the destination.
    """
    from apilake.dashboard.server import Dashboard
    from apilake.dates import run_dates

    job = _load(job_file, profile, offline=True)
    dates = run_dates(job.timezone, dt.datetime.now(dt.UTC), start=start, end=end) if start or end else None
    server = _http_server(host, port, Dashboard(job, job_file, dest or job.destination, dates=dates))
    click.echo(f"dashboard of {job_file} ({dest or job.destination}) at {server.url} (Ctrl-C or SIGTERM stops it)")
    import signal
    import threading

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())  # exit 0, as a service should
    try:
        server.serve_forever()
    finally:
        server.server_close()


def _http_server(host: str, port: int, pages: Any, routes: Any = None) -> Any:
    """A bound `DashboardServer`, or a clear error (exit 2) when the address cannot be used."""
    from apilake.dashboard.server import DashboardServer
    from apilake.errors import ListenError

    try:
        return DashboardServer((host, port), pages, routes)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another address or port") from None


if __name__ == "__main__":  # pragma: no cover
    main()
