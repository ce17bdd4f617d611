"""The work of one unit, the same wherever it runs: in this process or on a Dask worker.

Both executors call `UnitWork.unit` / `UnitWork.file` and nothing else to fetch and land, so
retries, skip-if-landed, integrity checks and the mapping of errors to results cannot drift
apart between them. Neither method raises for a unit's failure: it becomes a `UnitResult`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Concatenate, ParamSpec, TypeVar

from apilake.destinations import Destination
from apilake.errors import DestinationError, TransferError, UnitIgnored
from apilake.fetch.bulk import FileTransfer, fetch_listing, file_transfer, transfer_file
from apilake.fetch.client import SourceClient
from apilake.fetch.json import fetch_json_unit
from apilake.fetch.limits import DailyQuotaSpent
from apilake.fetch.paginate import paginator_for
from apilake.fetch.report import fetch_report
from apilake.fetch.rules import Rules, applying
from apilake.jobfile import Endpoint, Job, Source
from apilake.plan import Unit, typed_file_key
from apilake.record import UnitResult
from apilake.redact import Redactor
from apilake.traffic import observe
from apilake.vocabulary import ResultKind, result_kind

log = logging.getLogger("apilake")

P = ParamSpec("P")
R = TypeVar("R")
Outcome = TypeVar("Outcome", UnitResult, tuple[UnitResult, list[FileTransfer]])


def observed(work: Callable[P, Awaitable[Outcome]]) -> Callable[P, Awaitable[Outcome]]:
    """Run a unit's work (returning its `UnitResult`, or that and the files it lists) under
    `traffic.observe`, and stamp the result with what its requests met."""

    @functools.wraps(work)
    async def run(*args: P.args, **kwargs: P.kwargs) -> Outcome:
        with observe() as traffic:
            outcome = await work(*args, **kwargs)
        (outcome[0] if isinstance(outcome, tuple) else outcome).stamp(traffic)
        return outcome

    return run


def endpoints(job: Job) -> dict[tuple[str, str], Endpoint]:
    return {(s.name, e.name): e for s in job.sources for e in s.endpoints}


def failed(unit: Unit, kind: ResultKind, unit_id: str, exc: BaseException, url: str, redact: Redactor) -> UnitResult:
    """The result of a unit that raised; anything but an expected error is reported as a bug. A
    unit an `on_response` rule ignored did not fail: it is done, with nothing to land."""
    if isinstance(exc, UnitIgnored):
        return UnitResult.for_unit(unit, "ignored", unit_id=unit_id, kind=kind, url=redact(url), error=redact(str(exc)))
    if not isinstance(exc, (TransferError, DestinationError)):
        log.error("internal error in %s", unit_id, exc_info=exc)
        exc = TransferError(f"internal error ({type(exc).__name__}: {exc}); please report it")
    return UnitResult.for_unit(
        unit,
        "not_attempted" if isinstance(exc, DailyQuotaSpent) else "failed",
        unit_id=unit_id,
        kind=kind,
        url=redact(url),
        error=redact(str(exc)),
        attempts=getattr(exc, "attempts", 0),
    )


def not_attempted(unit: Unit, kind: ResultKind, unit_id: str, url: str, redact: Redactor, source: Source) -> UnitResult:
    """The result of a unit that never started because its source's daily quota is spent."""
    return UnitResult.for_unit(unit, "not_attempted", unit_id=unit_id, kind=kind, url=redact(url), error=f"not attempted: {DailyQuotaSpent.of(source)}")


def judged(work: Callable[Concatenate[UnitWork, Unit, P], Awaitable[R]]) -> Callable[Concatenate[UnitWork, Unit, P], Awaitable[R]]:
    """Run a unit's work with its endpoint's response rules (`fetch.rules`) judging its answers."""

    @functools.wraps(work)
    async def run(self: UnitWork, unit: Unit, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with applying(Rules.of(self._source(unit), self.endpoints[unit.source, unit.endpoint])):
            return await work(self, unit, *args, **kwargs)

    return run


@dataclass
class UnitWork:
    """Everything a unit needs to run: its source's client (with its budget) and the destination."""

    dest: Destination
    redact: Redactor
    force: bool
    endpoints: Mapping[tuple[str, str], Endpoint]
    clients: Mapping[str, SourceClient]
    recorded: Mapping[str, int] = field(default_factory=dict)  # key → bytes landed, by the run records

    def _spent(self, unit: Unit) -> bool:
        return self.clients[unit.source].budget.spent

    def _source(self, unit: Unit) -> Source:
        return self.clients[unit.source].source

    @observed
    @judged
    async def unit(self, unit: Unit) -> tuple[UnitResult, list[FileTransfer]]:
        """Land a JSON unit, or fetch a bulk unit's listing: its result and the files it lists."""
        kind = result_kind(unit.kind)
        if self._spent(unit):
            return not_attempted(unit, kind, unit.id, unit.request_url, self.redact, self._source(unit)), []
        client = self.clients[unit.source]
        endpoint = self.endpoints[unit.source, unit.endpoint]
        try:
            if unit.kind == "json":
                paginator = paginator_for(endpoint)
                return await fetch_json_unit(
                    unit,
                    client,
                    self.dest,
                    force=self.force,
                    paginator=paginator,
                    max_pages=endpoint.max_pages,
                    empty_ok=endpoint.empty == "ok" or endpoint.format == "ndjson",
                    recorded=self.recorded,
                    fmt=endpoint.format,
                ), []
            if unit.kind == "file":
                key, typed = typed_file_key(unit, endpoint)
                raw = file_transfer(unit.id, unit.request_url, key, endpoint, client.source, unit.url.rsplit("/", 1)[-1], typed=typed)
                return await transfer_file(unit, raw, client, self.dest, force=self.force, recorded=self.recorded), []
            if unit.kind == "report":
                listing = await fetch_report(unit, endpoint, client, self.dest, force=self.force)
            else:
                listing = await fetch_listing(unit, endpoint, client)
            return listing.result, listing.files
        except Exception as exc:  # noqa: BLE001 - one unit's failure never stops the others
            return failed(unit, kind, unit.id, exc, unit.request_url, self.redact), []

    @observed
    @judged
    async def file(self, unit: Unit, transfer: FileTransfer) -> UnitResult:
        """Land one file of a listing."""
        if self._spent(unit):
            return not_attempted(unit, "file", transfer.unit, transfer.url, self.redact, self._source(unit))
        try:
            return await transfer_file(unit, transfer, self.clients[unit.source], self.dest, force=self.force, recorded=self.recorded)
        except Exception as exc:  # noqa: BLE001 - one unit's failure never stops the others
            return failed(unit, "file", transfer.unit, exc, transfer.url, self.redact)
