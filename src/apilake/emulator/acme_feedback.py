"""Acme's feedback to its clients: rate-limit headers and a limit it enforces, and the errors it
reports inside a 200 (what `on_response` rules and `rate_limit_headers` are for).

- ``/acme/limited/items?page=N``: the Acme items in pages (``data``, ``meta.pages``), every
  answer carrying the window's headers: ``style`` ``x`` (``X-RateLimit-Limit`` / ``-Remaining``
  / ``-Reset``, the reset a Unix time as GitHub sends it), ``ietf`` (``RateLimit-*``, the
  reset in seconds) or ``structured`` (the later drafts' ``RateLimit: "default";r=…;t=…``).
  At most ``limit`` answers per fixed window of ``window_s``; one more is a 429 with
  ``Retry-After``, counted in ``throttled``.
- ``/acme/feedback/{account}?date=``: one account's figures for a day, by account:
  ``empty``: a 404 ``{"error": "no data for this date"}``; ``busy``: a 200 ``{"status":
  "processing"}`` for its first ``busy_times`` requests; ``suspended``: a 200 whose body says
  ``{"error": {"code": "account_suspended"}}``; ``throttled``: a 200 ``{"error": {"code":
  "rate_limited"}}`` with ``X-Retry-In: 1`` on its first request; any other: the figures.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from . import data
from .acme_answers import AcmeResponse, acme_items

__all__ = ["AcmeFeedback", "FeedbackConfig"]


@dataclass
class FeedbackConfig:
    limit: int = 10
    window_s: float = 1.0
    style: str = "x"  # x | ietf | structured
    busy_times: int = 2


class AcmeFeedback:
    """State of the limited and feedback endpoints: the window, and requests per account (thread-safe)."""

    def __init__(self) -> None:
        self.config = FeedbackConfig()
        self._lock = threading.Lock()
        self._window_start: float | None = None
        self._used = 0
        self._calls: dict[str, int] = {}
        self.throttled = 0  # 429s sent: a client that reads the headers gets none
        self.served = 0  # limited answers sent within the limit

    def limited(self, params: dict[str, str], items: int, page_size: int) -> AcmeResponse:
        cfg = self.config
        with self._lock:
            now = time.time()
            if self._window_start is None or now - self._window_start >= cfg.window_s:
                self._window_start, self._used = now, 0
            reset_in = self._window_start + cfg.window_s - now
            over = self._used >= cfg.limit
            if over:
                self.throttled += 1
            else:
                self._used += 1
                self.served += 1
            remaining = cfg.limit - self._used
        headers = self._headers(remaining, reset_in, now)
        if over:
            return AcmeResponse.json(429, {"error": "rate limit exceeded"}, [*headers, ("Retry-After", str(math.ceil(reset_in)))])
        rows = acme_items(items)
        pages = max(1, -(-len(rows) // page_size))
        page = int(params.get("page", "1"))
        return AcmeResponse.json(200, {"data": rows[(page - 1) * page_size : page * page_size], "meta": {"pages": pages}}, headers)

    def _headers(self, remaining: int, reset_in: float, now: float) -> list[tuple[str, str]]:
        cfg = self.config
        if cfg.style == "structured":  # the IETF draft from its version 08 on
            return [
                ("RateLimit", f'"default";r={remaining};t={math.ceil(reset_in)}'),
                ("RateLimit-Policy", f'"default";q={cfg.limit};w={math.ceil(cfg.window_s)}'),
            ]
        if cfg.style == "ietf":
            return [("RateLimit-Limit", str(cfg.limit)), ("RateLimit-Remaining", str(remaining)), ("RateLimit-Reset", str(math.ceil(reset_in)))]
        return [("X-RateLimit-Limit", str(cfg.limit)), ("X-RateLimit-Remaining", str(remaining)), ("X-RateLimit-Reset", str(math.ceil(now + reset_in)))]

    def feedback(self, account: str, params: dict[str, str]) -> AcmeResponse:
        with self._lock:
            calls = self._calls[account] = self._calls.get(account, 0) + 1
        if account == "empty":
            return AcmeResponse.json(404, {"error": "no data for this date"})
        if account == "busy" and calls <= self.config.busy_times:
            return AcmeResponse.json(200, {"status": "processing"})
        if account == "suspended":
            return AcmeResponse.json(200, {"error": {"code": "account_suspended", "message": "contact billing"}})
        if account == "throttled" and calls == 1:
            return AcmeResponse.json(200, {"error": {"code": "rate_limited"}}, [("X-Retry-In", "1")])
        return AcmeResponse.json(200, figures(account, params.get("date", "")))

    def calls(self, account: str) -> int:
        with self._lock:
            return self._calls.get(account, 0)


def figures(account: str, date: str) -> dict[str, object]:
    """An account's figures for a day, as `/acme/feedback/{account}` answers them."""
    return {"account": account, "date": date, "installs": data._h("feedback", account, date) % 1000}
