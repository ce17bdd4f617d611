"""The default executor: every unit runs in this process, on the runner's asyncio loop."""

from __future__ import annotations

from contextlib import AsyncExitStack
from types import TracebackType

from apilake.destinations import Destination
from apilake.executors.base import Executor, OnResult
from apilake.executors.work import UnitWork
from apilake.fetch.bulk import FileTransfer
from apilake.fetch.client import SourceClient
from apilake.fetch.limits import RequestBudget
from apilake.fetch.quota import Quotas
from apilake.fetch.refresh import token_store
from apilake.jobfile import Job
from apilake.plan import Unit
from apilake.record import UnitResult
from apilake.redact import Redactor


class LocalExecutor(Executor):
    """Runs units in this process on one asyncio loop, one HTTP client and budget per source."""

    def __init__(self, job: Job, dest: Destination, redact: Redactor, *, force: bool, on_result: OnResult) -> None:
        super().__init__(job, dest, redact, force=force, on_result=on_result)
        self._budgets: dict[str, RequestBudget] = {}
        self._stack = AsyncExitStack()
        self._work: UnitWork | None = None

    async def __aenter__(self) -> LocalExecutor:
        quotas = await self._stack.enter_async_context(Quotas(self.job, self.dest))
        self._budgets = {s.name: RequestBudget(s, quotas.get(s)) for s in self.job.sources}
        tokens = token_store(self.job, self.dest)
        if tokens is not self.dest:
            self._stack.push_async_callback(tokens.close)
        clients = {}
        for source in self.job.sources:
            client = SourceClient(source, self.redact, self._budgets[source.name], tokens)
            self._stack.push_async_callback(client.close)
            clients[source.name] = client
        self._work = UnitWork(self.dest, self.redact, self.force, self._endpoints, clients, self.recorded)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._stack.aclose()

    @property
    def work(self) -> UnitWork:
        if self._work is None:
            raise RuntimeError("use the executor as `async with executor:`")
        return self._work

    def spent(self, source: str) -> bool:
        return self._budgets[source].spent

    async def run_unit(self, unit: Unit) -> tuple[UnitResult, list[FileTransfer]]:
        return await self.work.unit(unit)

    async def run_file(self, unit: Unit, transfer: FileTransfer) -> UnitResult:
        return await self.work.file(unit, transfer)
