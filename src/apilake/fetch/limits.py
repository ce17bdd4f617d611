"""Client-side request budgets of a source, shared by all of its concurrent units.

A sliding-window limiter (never more than `requests_per_minute` calls in any 60 s window, nor
`requests_per_second` in any second, so the vendor has no reason to answer 429) and a daily
quota that, once spent, stops new work; the daily quota is counted in a ledger shared by every
run using the same credential (`fetch.quota`).

`Budget` is the whole interface `SourceClient` relies on; `RequestBudget` keeps the windows in
this process, and the Dask executor has one that keeps them on the cluster's scheduler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from apilake.fetch.quota import DailyQuotaSpent
from apilake.jobfile import Source

if TYPE_CHECKING:
    from pyrate_limiter import Limiter, Rate

__all__ = ["Budget", "DailyQuotaSpent", "Quota", "RequestBudget", "local_rates", "windows"]


class Quota(Protocol):
    """A source's daily quota as a `RequestBudget` uses it (`fetch.quota.DailyQuota`)."""

    @property
    def spent(self) -> bool: ...

    async def take(self) -> None: ...


class Budget(Protocol):
    """What a `SourceClient` asks before every request to its own origin."""

    @property
    def spent(self) -> bool:
        """True once the daily quota is known to be used up: no new unit should start."""
        ...

    async def acquire(self) -> None:
        """Wait until a request may go out; raise `DailyQuotaSpent` once the quota is spent."""
        ...


def windows(source: Source) -> list[tuple[int, float]]:
    """The source's sliding windows as (calls, seconds), shortest first."""
    found: list[tuple[int, float]] = []
    if source.requests_per_second:
        found.append((source.requests_per_second, 1.0))
    if source.requests_per_minute:
        found.append((source.requests_per_minute, 60.0))
    return found


def local_rates(source: Source) -> list[Rate]:
    """The source's windows as pyrate-limiter rates, keeping only those that can bind.

    Each window is kept 1 % + 25 ms longer than stated: a request reaches the vendor a little
    after its slot is granted, and that jitter must not squeeze N+1 calls into its window.
    pyrate-limiter refuses a longer window that allows no fewer calls per second than a shorter
    one (100/s with 6,000/min, say); such a window is implied by the shorter one, so it is left out.
    """
    from pyrate_limiter import Duration, Rate  # loaded only for a source with a rate limit

    rates: list[Rate] = []
    for calls, seconds in windows(source):
        interval = int((seconds * 1.01 + 0.025) * Duration.SECOND.value)
        if rates and calls <= rates[-1].limit:  # the longer window is the stricter one even per second
            rates.pop()
        if rates and calls * rates[-1].interval >= rates[-1].limit * interval:
            continue
        rates.append(Rate(calls, interval))
    return rates


def _limiter(source: Source) -> Limiter | None:
    """The in-process limiter of the source's windows; None (and pyrate-limiter not even
    loaded) for a source without a rate limit."""
    if not windows(source):
        return None
    from pyrate_limiter import Limiter

    # pyrate-limiter wakes a waiter 50 ms after its slot frees. Part of the margin too: with 10 ms
    # the emulator answered 429 in `make bench`, whose machine also runs the vendor and the harness.
    return Limiter(local_rates(source))


class RequestBudget:
    """The budget of a source within this process (the local executor): sliding windows here,
    the daily quota from the source's ledger (`quota`, shared with every other run)."""

    def __init__(self, source: Source, quota: Quota | None = None) -> None:
        self.source = source.name
        self.quota = quota
        self._limiter = _limiter(source)

    @property
    def spent(self) -> bool:
        return self.quota is not None and self.quota.spent

    async def acquire(self) -> None:
        """Count the request against the daily quota (raising `DailyQuotaSpent` once it is
        spent), then wait for a slot in the sliding windows."""
        if self.quota is not None:
            await self.quota.take()
        if self._limiter is not None:
            await self._limiter.try_acquire_async(self.source)
