"""Admission by priority: slots go to the longest chains first (unit tests of the gate and ranks)."""

from __future__ import annotations

import asyncio

from apilake.executors.admission import FILE_RANK, Admission, rank
from apilake.plan import Unit


def unit(kind: str, paginate: str = "none") -> Unit:
    return Unit("s", "e", kind, "2026-11-25", (), "http://x/e", (), "k", paginate)


def test_ranks_put_longer_chains_first() -> None:
    assert FILE_RANK < rank(unit("bulk")) < rank(unit("json", "next_page")) < rank(unit("json"))
    assert rank(unit("json", "page_index")) == rank(unit("json", "next_page"))


def test_waiters_are_let_in_by_priority_then_arrival_and_cancelled_ones_are_skipped() -> None:
    order: list[str] = []

    async def go() -> None:
        slots = Admission(1, {"a": 1, "b": 2})
        release = asyncio.Event()

        async def holder() -> None:
            async with slots.slot("a", 5):
                await release.wait()

        async def waiter(name: str, source: str, priority: int) -> None:
            async with slots.slot(source, priority):
                order.append(name)

        first = asyncio.create_task(holder())
        await asyncio.sleep(0)
        plan = [("single", "a", 3), ("page", "b", 2), ("cancelled", "a", 0), ("file", "a", 0), ("single2", "b", 3)]
        tasks = [asyncio.create_task(waiter(*w)) for w in plan]
        await asyncio.sleep(0)
        tasks[2].cancel()
        release.set()
        await asyncio.gather(first, *tasks, return_exceptions=True)
        async with slots.slot("a", 9):  # every slot came back
            order.append("after")

    asyncio.run(go())
    assert order == ["file", "page", "single", "single2", "after"]


def test_a_full_source_does_not_hold_back_another_sources_waiters() -> None:
    order: list[str] = []

    async def go() -> None:
        slots = Admission(2, {"a": 1, "b": 1})
        release = asyncio.Event()

        async def holder() -> None:
            async with slots.slot("a", 0):
                await release.wait()

        async def waiter(name: str, source: str, priority: int) -> None:
            async with slots.slot(source, priority):
                order.append(name)

        first = asyncio.create_task(holder())
        await asyncio.sleep(0)
        blocked = asyncio.create_task(waiter("a-file", "a", 0))  # better rank, but its source is full
        other = asyncio.create_task(waiter("b-single", "b", 3))
        await other
        release.set()
        await asyncio.gather(first, blocked)

    asyncio.run(go())
    assert order == ["b-single", "a-file"]
