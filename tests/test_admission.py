"""Admission by priority: slots go to the longest chains first (unit tests of the gate and ranks)."""

from __future__ import annotations

import asyncio

from apilake.executors.admission import FILE_RANK, Admission, rank
from apilake.plan import Unit


def unit(kind: str, paginate: str = "none") -> Unit:
    return Unit("s", "e", kind, "2026-11-25", (), "http://x/e", (), "k", paginate)


class Gate:
    """An `Admission` with one slot of `source` held until `release` is set, and waiters that
    note their names in `order` as they get in."""

    def __init__(self, total: int, per_source: dict[str, int], source: str, priority: int) -> None:
        self.slots = Admission(total, per_source)
        self.release = asyncio.Event()
        self.order: list[str] = []
        self.holder = asyncio.create_task(self._hold(source, priority))

    async def _hold(self, source: str, priority: int) -> None:
        async with self.slots.slot(source, priority):
            await self.release.wait()

    async def waiter(self, name: str, source: str, priority: int) -> None:
        async with self.slots.slot(source, priority):
            self.order.append(name)


def test_ranks_put_longer_chains_first() -> None:
    assert FILE_RANK < rank(unit("report")) < rank(unit("bulk")) < rank(unit("json", "next_page")) < rank(unit("json"))
    assert rank(unit("json", "page_index")) == rank(unit("json", "next_page"))


def test_waiters_are_let_in_by_priority_then_arrival_and_cancelled_ones_are_skipped() -> None:
    async def go() -> list[str]:
        gate = Gate(1, {"a": 1, "b": 2}, "a", 5)
        await asyncio.sleep(0)
        plan = [("single", "a", 3), ("page", "b", 2), ("cancelled", "a", 0), ("file", "a", 0), ("single2", "b", 3)]
        tasks = [asyncio.create_task(gate.waiter(*w)) for w in plan]
        await asyncio.sleep(0)
        tasks[2].cancel()
        gate.release.set()
        await asyncio.gather(gate.holder, *tasks, return_exceptions=True)
        async with gate.slots.slot("a", 9):  # every slot came back
            gate.order.append("after")
        return gate.order

    assert asyncio.run(go()) == ["file", "page", "single", "single2", "after"]


def test_a_full_source_does_not_hold_back_another_sources_waiters() -> None:
    async def go() -> list[str]:
        gate = Gate(2, {"a": 1, "b": 1}, "a", 0)
        await asyncio.sleep(0)
        blocked = asyncio.create_task(gate.waiter("a-file", "a", 0))  # better rank, but its source is full
        await asyncio.create_task(gate.waiter("b-single", "b", 3))
        gate.release.set()
        await asyncio.gather(gate.holder, blocked)
        return gate.order

    assert asyncio.run(go()) == ["b-single", "a-file"]
