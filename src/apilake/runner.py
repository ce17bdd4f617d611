"""Running a job: plan → fetch → land → record, with one lock, one record and one summary.

Units run concurrently on one asyncio loop, bounded per source (`concurrency`) and across
the job (`concurrency` at the top level). One unit's failure never stops the others.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from apilake import __version__, logs
from apilake.destinations import Destination, open_destination
from apilake.errors import DestinationError, InterruptedRun, TransferError
from apilake.fetch.bulk import FileTransfer, fetch_listing, transfer_file
from apilake.fetch.client import SourceClient
from apilake.fetch.json import fetch_json_unit
from apilake.fetch.limits import DailyQuotaSpent, RequestBudget
from apilake.jobfile import Job
from apilake.lock import run_lock
from apilake.plan import Unit
from apilake.record import UnitResult, new_run_id, record_document, record_key, run_status, write_record
from apilake.redact import Redactor

log = logging.getLogger("apilake")

OnResult = Callable[[UnitResult], None]


@dataclass
class RunReport:
    run_id: str
    destination: str
    status: str  # succeeded | failed | interrupted
    results: list[UnitResult] = field(default_factory=list)

    @property
    def record_key(self) -> str:
        return record_key(self.run_id)

    @property
    def exit_code(self) -> int:
        return {"succeeded": 0, "failed": 1}.get(self.status, InterruptedRun.exit_code)

    def failures(self) -> list[UnitResult]:
        return [r for r in self.results if r.status in ("failed", "not_attempted", "interrupted")]


class LocalExecutor:
    """Runs units in this process on one asyncio loop."""

    def __init__(self, job: Job, dest: Destination, redact: Redactor, *, force: bool, on_result: OnResult) -> None:
        self.job = job
        self.dest = dest
        self.redact = redact
        self.force = force
        self.on_result = on_result
        self._endpoints = {(s.name, e.name): e for s in job.sources for e in s.endpoints}
        self._budgets = {s.name: RequestBudget(s) for s in job.sources}
        self._source_slots = {s.name: asyncio.Semaphore(s.concurrency) for s in job.sources}
        self._job_slots = asyncio.Semaphore(job.concurrency)
        self._clients: dict[str, SourceClient] = {}

    async def run(self, units: Iterable[Unit]) -> None:
        async with AsyncExitStack() as stack:
            for source in self.job.sources:
                client = SourceClient(source, self.redact, self._budgets[source.name])
                stack.push_async_callback(client.close)
                self._clients[source.name] = client
            async with asyncio.TaskGroup() as group:
                for unit in units:
                    group.create_task(self._unit(unit, group))

    def _fail(self, unit: Unit, kind: str, unit_id: str, exc: Exception, url: str) -> UnitResult:
        if not isinstance(exc, (TransferError, DestinationError)):
            log.error("internal error in %s", unit_id, exc_info=exc)
            exc = TransferError(f"internal error ({type(exc).__name__}: {exc}); please report it")
        return UnitResult(
            unit_id,
            unit.source,
            unit.endpoint,
            unit.date,
            kind,  # type: ignore[arg-type]
            "not_attempted" if isinstance(exc, DailyQuotaSpent) else "failed",
            url=self.redact(url),
            error=self.redact(str(exc)),
            attempts=getattr(exc, "attempts", 0),
        )

    async def _unit(self, unit: Unit, group: asyncio.TaskGroup) -> None:
        client = self._clients[unit.source]
        kind = "json" if unit.kind == "json" else "listing"
        async with self._source_slots[unit.source], self._job_slots:
            if self._budgets[unit.source].spent:
                self.on_result(self._not_attempted(unit, kind, unit.id, unit.request_url))
                return
            try:
                if unit.kind == "json":
                    result = await fetch_json_unit(unit, client, self.dest, force=self.force)
                else:
                    listing = await fetch_listing(unit, self._endpoints[unit.source, unit.endpoint], client)
                    result = listing.result
                    for transfer in listing.files:
                        group.create_task(self._file(unit, transfer))
            except Exception as exc:  # noqa: BLE001 - one unit's failure never stops the others
                result = self._fail(unit, kind, unit.id, exc, unit.request_url)
        self.on_result(result)

    async def _file(self, unit: Unit, transfer: FileTransfer) -> None:
        async with self._source_slots[unit.source], self._job_slots:
            if self._budgets[unit.source].spent:
                self.on_result(self._not_attempted(unit, "file", transfer.unit, transfer.url))
                return
            try:
                result = await transfer_file(unit, transfer, self._clients[unit.source], self.dest, force=self.force)
            except Exception as exc:  # noqa: BLE001 - one unit's failure never stops the others
                result = self._fail(unit, "file", transfer.unit, exc, transfer.url)
        self.on_result(result)

    def _not_attempted(self, unit: Unit, kind: str, unit_id: str, url: str) -> UnitResult:
        budget = self._budgets[unit.source]
        return UnitResult(
            unit_id, unit.source, unit.endpoint, unit.date, kind, "not_attempted",  # type: ignore[arg-type]
            url=self.redact(url),
            error=f"not attempted: the daily request quota of source {unit.source!r} ({budget.per_day} requests_per_day) is spent",
        )


def run_job(
    job: Job,
    units: list[Unit],
    *,
    job_path: str,
    dates: list[dt.date],
    destination: str | None = None,
    force: bool = False,
    on_result: OnResult | None = None,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
) -> RunReport:
    """Run planned units under the job's lock and write the run record; never raises for unit failures."""
    dest = open_destination(destination or job.destination, job.s3)
    with run_lock(job_path, dest.url):
        return asyncio.run(_run(job, units, dest, job_path, dates, force, on_result or (lambda r: None), now))


async def _run(
    job: Job,
    units: list[Unit],
    dest: Destination,
    job_path: str,
    dates: list[dt.date],
    force: bool,
    on_result: OnResult,
    now: Callable[[], dt.datetime],
) -> RunReport:
    redact = Redactor(job.secrets())
    started = now()
    report = RunReport(new_run_id(started), dest.url, "running")
    logs.run_id.set(report.run_id)
    log.info("run %s: %d units into %s", report.run_id, len(units), dest.url)

    def collect(result: UnitResult) -> None:
        report.results.append(result)
        level = logging.WARNING if result.status == "failed" else logging.DEBUG
        log.log(level, "%s %s%s", result.status, result.unit, f": {result.error}" if result.error else "")
        on_result(result)

    def document(status: str, finished: dt.datetime | None) -> dict:
        return record_document(
            run_id=report.run_id,
            job=job_path,
            destination=dest.url,
            dates=[d.isoformat() for d in dates],
            started=started,
            finished=finished,
            status=status,
            results=report.results,
            version=__version__,
        )

    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    stopped: list[str] = []

    def interrupt(signum: int) -> None:
        stopped.append(signal.Signals(signum).name)
        log.warning("%s received: stopping; in-flight transfers are discarded", stopped[-1])
        assert main is not None
        main.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt, signum)
    try:
        await dest.check()
        await write_record(dest, document("running", None))
        executor = LocalExecutor(job, dest, redact, force=force, on_result=collect)
        try:
            await executor.run(units)
        except asyncio.CancelledError:
            if not stopped:
                raise
            assert main is not None
            main.uncancel()
        finished_units = {r.unit for r in report.results}
        for unit in units:
            if unit.id not in finished_units:
                kind = "json" if unit.kind == "json" else "listing"
                reason = f"run interrupted by {stopped[0]}" if stopped else "not finished"
                collect(
                    UnitResult(unit.id, unit.source, unit.endpoint, unit.date, kind, "interrupted", url=redact(unit.request_url), error=reason)
                )
        report.status = run_status(report.results, interrupted=bool(stopped))
        await write_record(dest, document(report.status, now()))
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await dest.close()
    return report
