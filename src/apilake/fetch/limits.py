"""Client-side request budgets of a source, shared by all of its concurrent units.

A sliding-window limiter (never more than `requests_per_minute` calls in any 60 s window, nor
`requests_per_second` in any second, so the vendor has no reason to answer 429) and a daily
quota that, once spent, stops new work.
"""

from __future__ import annotations

from pyrate_limiter import Duration, Limiter, Rate

from apilake.errors import TransferError
from apilake.jobfile import Source


class DailyQuotaSpent(TransferError):
    """The source's `requests_per_day` is used up; the unit was not (fully) attempted."""


class RequestBudget:
    def __init__(self, source: Source) -> None:
        self.source = source.name
        self.per_day = source.requests_per_day
        self.used = 0
        rates = []
        if source.requests_per_second:
            rates.append(Rate(source.requests_per_second, Duration.SECOND.value))
        if source.requests_per_minute:
            rates.append(Rate(source.requests_per_minute, Duration.MINUTE.value))
        self._limiter = Limiter(rates) if rates else None

    @property
    def spent(self) -> bool:
        return self.per_day is not None and self.used >= self.per_day

    async def acquire(self) -> None:
        """Wait for a slot in the sliding windows; refuse once the daily quota is spent."""
        if self.spent:
            raise DailyQuotaSpent(
                f"daily request quota of source {self.source!r} ({self.per_day} requests_per_day) is spent"
            )
        self.used += 1
        if self._limiter is not None:
            await self._limiter.try_acquire_async(self.source)

