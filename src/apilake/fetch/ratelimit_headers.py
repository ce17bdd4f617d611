"""The waits a vendor asks for: its rate-limit headers and its `Retry-After`.

Many APIs say in every answer how many requests are left in the current window and when it
resets (`X-RateLimit-Remaining` / `-Reset` / `-Limit`, or the IETF draft's `RateLimit-*`).
`Pacing` reads them off every answer of a source's own origin and, once what is left (less the
requests still in flight) reaches the source's `margin`, holds the source's next requests until
the reset, rather than collect a 429 for each. A 429 itself closes the window too, for the time
its `Retry-After` (or the reset header) names, so the source's other units wait with the one
that met it.

Every wait has a floor (`retry.min_retry_after`: a `Retry-After: 0` never makes a tight loop)
and a cap (`retry.max_retry_after`): a longer wait fails the unit at once, saying so, instead
of holding a run for hours.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import re
import time
from collections.abc import Callable, Mapping

from apilake.errors import TransferError
from apilake.jobfile import RateLimitHeaders, Retry

log = logging.getLogger("apilake")

#: The header names looked up for a setting left out, in order: the de-facto `X-RateLimit-*`,
#: then the IETF draft's (draft-ietf-httpapi-ratelimit-headers).
DEFAULT_NAMES: dict[str, tuple[str, ...]] = {
    "remaining": ("x-ratelimit-remaining", "ratelimit-remaining"),
    "reset": ("x-ratelimit-reset", "ratelimit-reset"),
    "limit": ("x-ratelimit-limit", "ratelimit-limit"),
}
#: The later drafts' one structured field, looked in when none of the above is there: `RateLimit:
#: limit=100, remaining=50, reset=30` (draft 07), or `RateLimit: "default";r=50;t=30` with
#: `RateLimit-Policy: "default";q=100;w=60` (draft 08 on).
STRUCTURED: dict[str, tuple[tuple[str, str], ...]] = {
    "remaining": (("ratelimit", "remaining"), ("ratelimit", "r")),
    "reset": (("ratelimit", "reset"), ("ratelimit", "t")),
    "limit": (("ratelimit", "limit"), ("ratelimit-policy", "q")),
}
#: A reset past this many seconds is a Unix time (GitHub's, X's), not a number of seconds to wait.
EPOCH_AFTER = 1_000_000_000


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_reset(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds until a rate-limit window resets: delta-seconds (the IETF draft, most APIs), a Unix
    time when the number is past `EPOCH_AFTER`, or an HTTP date; None when it is none of them."""
    if not value:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return parse_retry_after(value, now=now)
    if math.isnan(number) or number < 0:
        return None
    if number > EPOCH_AFTER:
        return max(0.0, number - (time.time() if now is None else now))
    return number


def beyond_cap(exc: TransferError, policy: Retry) -> TransferError:
    """`exc` as a final failure when the vendor asks for a wait past `max_retry_after`, else `exc`."""
    if not exc.transient or exc.retry_after is None or exc.retry_after <= policy.max_retry_after:
        return exc
    final = TransferError(
        f"{exc} — the vendor asks to wait {exc.retry_after:.0f} s, beyond retry.max_retry_after ({policy.max_retry_after:g} s); raise it to wait that long",
        status=exc.status,
    )
    final.attempts = exc.attempts
    return final


def floored(seconds: float, policy: Retry) -> float:
    """A vendor's wait as waited: never below `min_retry_after`."""
    return max(seconds, policy.min_retry_after)


class Pacing:
    """A source's window as its vendor last told it, shared by the source's units in this process."""

    def __init__(
        self,
        spec: RateLimitHeaders,
        policy: Retry,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._spec = spec
        self._policy = policy
        self._clock = clock
        self._left: int | None = None  # requests that may still go before the reset (None: not told)
        self._reset_at: float | None = None  # on `clock`
        self._limit: int | None = None
        self._lowest: int | None = None  # the least `remaining` told in this window: answers arrive out of order
        self._in_flight = 0
        self._announced: float | None = None  # the reset last logged

    async def before(self) -> None:
        """Wait until a request may go out; a reset past the cap fails the request instead."""
        while self._left is not None and self._left <= 0:
            wait = self._policy.min_retry_after if self._reset_at is None else self._reset_at - self._clock()
            if wait <= 0:
                self._left = None if self._limit is None else self._limit - self._spec.margin - self._in_flight
                self._reset_at = self._lowest = None
                continue
            if wait > self._policy.max_retry_after:
                raise TransferError(
                    f"the vendor's rate limit resets in {wait:.0f} s, beyond retry.max_retry_after "
                    f"({self._policy.max_retry_after:g} s); raise it to wait that long"
                )
            if self._announced != self._reset_at:  # once per window, not once per waiting request
                self._announced = self._reset_at
                log.info("rate limit: waiting %.1f s for the vendor's window to reset", wait)
            await asyncio.sleep(wait)
            if self._reset_at is None and self._in_flight == 0:  # not told when: one request finds out, the others wait for its answer
                self._left = 1
        if self._left is not None:
            self._left -= 1
        self._in_flight += 1

    def after(self, status: int, headers: Mapping[str, str]) -> None:
        """Learn the window from an answer's headers (lower-case names)."""
        self._in_flight -= 1
        if not self._spec.enabled:
            return
        now = self._clock()
        remaining = _integer(self._header(headers, "remaining"))
        reset = parse_reset(self._header(headers, "reset"))
        limit = _integer(self._header(headers, "limit"))
        if limit is not None:
            self._limit = limit
        if status == 429:
            told = parse_retry_after(headers.get("retry-after"))
            wait = told if told is not None else reset
            self._left = 0
            self._reset_at = now + floored(wait if wait is not None else 0.0, self._policy)
            return
        if remaining is None or (reset is not None and reset <= 0):
            return  # not told, or told of a window that is over (a late answer): nothing about this one
        if self._reset_at is not None and now >= self._reset_at:
            self._lowest = None  # a new window
        self._lowest = remaining if self._lowest is None else min(self._lowest, remaining)
        self._left = self._lowest - self._spec.margin - self._in_flight
        if reset is not None:
            self._reset_at = now + reset

    def gone(self) -> None:
        """A request that got no answer (a transport failure, a cancellation)."""
        self._in_flight -= 1

    def _header(self, headers: Mapping[str, str], setting: str) -> str | None:
        named = getattr(self._spec, setting)
        for name in (named.lower(),) if named else DEFAULT_NAMES[setting]:
            if name in headers:
                return headers[name]
        return None if named else structured(headers, setting)


def structured(headers: Mapping[str, str], setting: str) -> str | None:
    """A setting's value from the IETF draft's structured field (`STRUCTURED`), or None."""
    for field, key in STRUCTURED[setting]:
        found = re.search(rf"(?:^|[\s,;]){key}=(\d+)", headers.get(field, ""))
        if found:
            return found[1]
    return None


def _integer(value: str | None) -> int | None:
    """A header's count, or None when it is missing or not a count (e.g. a list some vendors send)."""
    try:
        return int(value.split(",")[0].strip()) if value is not None else None
    except ValueError:
        return None
