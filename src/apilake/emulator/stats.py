"""Request log of the emulator, so tests can assert how a client behaved."""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

__all__ = ["RequestRecord", "Stats"]


class RequestRecord(NamedTuple):
    """One request as the emulator saw and answered it."""

    mono: float
    wall: float
    origin: str  # "api" | "files"
    target: str  # path + query as received
    status: int  # status sent (0 if the connection was dropped before a status)
    authorization: str | None
    encoding: str | None = None  # the answer's Content-Encoding, if any


class Stats:
    """Thread-safe append-only log with the queries tests need."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def record(self, rec: RequestRecord) -> None:
        with self._lock:
            self._records.append(rec)

    def reset(self) -> None:
        with self._lock:
            self._records.clear()

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of every record so far, in arrival order."""
        with self._lock:
            return list(self._records)

    def count(self, origin: str | None = None, path_contains: str | None = None, status: int | None = None) -> int:
        """Number of requests matching all given filters."""
        return sum(
            1
            for r in self.requests
            if (origin is None or r.origin == origin) and (path_contains is None or path_contains in r.target) and (status is None or r.status == status)
        )

    def auth_headers(self, origin: str) -> int:
        """How many requests at ``origin`` carried any Authorization header."""
        return sum(1 for r in self.requests if r.origin == origin and r.authorization is not None)

    def max_in_window(self, seconds: float = 60, origin: str | None = "api", status: int | None = None) -> int:
        """Most requests seen in any sliding window of ``seconds`` (to check quota compliance)."""
        times = sorted(r.mono for r in self.requests if (origin is None or r.origin == origin) and (status is None or r.status == status))
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= seconds:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def summary(self, include_requests: bool = False) -> dict[str, Any]:
        """JSON-friendly counts (served at /_emulator/stats; ``?requests=1`` adds the log)."""
        recs = self.requests
        by_status: dict[str, int] = {}
        for r in recs:
            key = f"{r.origin}:{r.status}"
            by_status[key] = by_status.get(key, 0) + 1
        out: dict[str, Any] = {
            "code": 200,
            "total": len(recs),
            "api": sum(1 for r in recs if r.origin == "api"),
            "files": sum(1 for r in recs if r.origin == "files"),
            "by_status": by_status,
            "throttled": sum(1 for r in recs if r.status == 429),  # the 429s sent: a client that paces itself gets none
            "auth_headers": {"api": self.auth_headers("api"), "files": self.auth_headers("files")},
            "max_api_per_minute": self.max_in_window(60, "api"),
        }
        if include_requests:
            out["requests"] = [{"t": r.wall, "origin": r.origin, "target": r.target, "status": r.status, "auth": r.authorization is not None} for r in recs]
        return out
