"""Pages fetched ahead: when page 1 tells how many pages there are, the rest go out concurrently.

The paging walk itself does not change: it still reads page after page and decides from each one
whether and where paging goes on, exactly as without fetching ahead (so the keys and the landed
bytes are the same). Only, the page it asks for next was usually requested already. At most
`width` pages are requested ahead of the one the walk reads, so a total that overstates the pages
costs at most `width` requests, and the pages held in memory stay bounded: each page fetched
ahead is capped by what is left of the unit's `max_json_mb` when it starts, so before the walk
counts them all together, `width` of them may hold up to `width` times that. Each request also
takes a place among the source's in-flight requests and its rate limits (`SourceClient`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")


class PagesAhead(Generic[T]):
    """`fetch(url, number)` for the pages of one unit, those of `plan()`'s URLs started early.

    Use as `async with PagesAhead(fetch, width) as ahead:`; leaving it cancels what the walk
    never read (paging ended earlier than planned, or a page failed)."""

    def __init__(self, fetch: Callable[[str, int], Awaitable[T]], width: int) -> None:
        self._fetch = fetch
        self._width = max(1, width)
        self._planned: list[str] = []  # pages 2, 3, … as page 1 foretold them
        self._started: dict[str, asyncio.Task[T]] = {}

    def plan(self, urls: list[str]) -> None:
        """The URLs of pages 2, 3, … in order, as known from page 1."""
        self._planned = list(urls)

    async def page(self, url: str, number: int) -> T:
        """Page `number` at `url`: the planned one's answer, else fetched now."""
        index = number - 2
        if not 0 <= index < len(self._planned) or self._planned[index] != url:
            return await self._fetch(url, number)
        for ahead in range(index, min(index + self._width, len(self._planned))):
            following = self._planned[ahead]
            if following not in self._started:
                self._started[following] = asyncio.ensure_future(self._fetch(following, ahead + 2))
        return await self._started.pop(url)

    async def __aenter__(self) -> PagesAhead[T]:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for task in self._started.values():
            task.cancel()
        await asyncio.gather(*self._started.values(), return_exceptions=True)
        self._started.clear()
