"""Admission by priority: the units with the longest chains start first.

A run's wall time is at least its longest chain of dependent requests: a report's create, its
polls (seconds apart) and then its files, a bulk listing and then its files, the pages of a
paginated endpoint one after another. Started last, such a chain ends
last, long after the single-request units are done; started first, it runs while they fill the
other slots. So every slot is handed to the waiting work of the lowest rank (`rank`), and in
arrival order within a rank.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from apilake.plan import Unit

FILE_RANK = 0  # a listed file continues a chain already under way


def rank(unit: Unit) -> int:
    """Lower starts first: reports (create, polls, then files), bulk listings (then their files),
    paginated endpoints, single requests."""
    if unit.kind == "report":
        return 1
    if unit.kind == "bulk":
        return 2
    return 3 if unit.paginate != "none" else 4


class Admission:
    """Slots of the job and of each source, handed out together by priority, then arrival.

    One decision for both limits: taken one after the other, a unit holding a source slot while
    it waits for a job slot would block that source's files behind it.
    """

    def __init__(self, job_slots: int, source_slots: dict[str, int]) -> None:
        self._job_free = job_slots
        self._free = dict(source_slots)
        self._waiting: dict[str, list[tuple[int, int, asyncio.Future[None]]]] = {name: [] for name in source_slots}
        self._order = itertools.count()

    def ticket(self, source: str, priority: int) -> asyncio.Future[None]:
        """A place in the queue, taken now (a listing queues its files before it lets go of its slot)."""
        turn = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting[source], (priority, next(self._order), turn))
        self._admit()
        return turn

    @asynccontextmanager
    async def slot(self, source: str, priority: int | asyncio.Future[None]) -> AsyncIterator[None]:
        """Hold a slot of `source` and of the job: queue with `priority`, or use a `ticket()`."""
        turn = self.ticket(source, priority) if isinstance(priority, int) else priority
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # let in, then cancelled: pass the slot on
                self._release(source)
            raise
        try:
            yield
        finally:
            self._release(source)

    def _release(self, source: str) -> None:
        self._job_free += 1
        self._free[source] += 1
        self._admit()

    def _admit(self) -> None:
        """Let in the best waiters whose source has a free slot, while the job has one."""
        while self._job_free > 0:
            best: list[tuple[int, int, asyncio.Future[None]]] | None = None
            chosen = ""
            for source, heap in self._waiting.items():
                while heap and heap[0][2].done():  # cancelled while waiting
                    heapq.heappop(heap)
                if heap and self._free[source] > 0 and (best is None or heap[0] < best[0]):
                    best, chosen = heap, source
            if best is None:
                return
            _, _, turn = heapq.heappop(best)
            self._job_free -= 1
            self._free[chosen] -= 1
            turn.set_result(None)
