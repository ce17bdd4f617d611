"""Request counters: what one unit's requests met, counted where they are sent.

The HTTP client (`fetch.client`) counts every request to a source's own origin and every
response by status; the unit's work (`executors.work`) opens the count around one unit and
puts it on the unit's result. A context variable carries the count, so concurrent units on
one event loop each count their own requests.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(slots=True)
class Traffic:
    """What one unit's requests met, since `started`."""

    started: dt.datetime
    requests: int = 0  # requests to the source's own origin: what its quota counts
    http: dict[str, int] = field(default_factory=dict)  # responses by HTTP status, every attempt and redirect


_traffic: ContextVar[Traffic | None] = ContextVar("apilake_traffic", default=None)


@contextmanager
def observe() -> Iterator[Traffic]:
    """Count the requests and HTTP statuses of the unit run inside this block (one asyncio task)."""
    traffic = Traffic(dt.datetime.now(dt.UTC))
    token = _traffic.set(traffic)
    try:
        yield traffic
    finally:
        _traffic.reset(token)


def count_request() -> None:
    """One request to a source's own origin (counted against its quota)."""
    if (traffic := _traffic.get()) is not None:
        traffic.requests += 1


def count_response(status: int) -> None:
    """One response (of any attempt or redirect) with this HTTP status."""
    if (traffic := _traffic.get()) is not None:
        traffic.http[str(status)] = traffic.http.get(str(status), 0) + 1
