"""Acme's records that change between runs, read "since the last time" in three vendors' dialects.

Records live in two repositories (``r1``, ``r2``), created two hours before the emulator started,
a minute apart. A test changes them between runs: ``touch`` (a new version, ``updated_at`` now or
at a time given: a late update, visible only now but stamped in the past) and ``add`` (a new
record). ``versions`` is every version ever visible, what incremental runs must land.

- GitHub: ``GET /acme/gh/orgs/{org}/repos``; ``GET /acme/gh/repos/{org}/{repo}/issues?since=ISO&per_page=N&page=P``
  (``updated_at >= since``, oldest first, RFC 8288 ``Link`` paging).
- Stripe: ``GET /acme/stripe/charges?created[gte]=EPOCH&limit=N&starting_after=ID`` (newest
  first, ``has_more``).
- Zendesk: ``POST /acme/zendesk/incremental/tickets?page=P`` with ``{"start_time": EPOCH,
  "end_time": EPOCH}`` in the body (both ends inclusive), ``next_page`` until ``end_of_stream``.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

__all__ = ["Changes", "Record", "iso"]

Answer = tuple[int, Any, list[tuple[str, str]]]


def iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Record:
    id: int
    repo: str
    created: int  # epoch seconds
    updated: int
    value: int

    def issue(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "number": self.id,
            "title": f"issue {self.id}",
            "value": self.value,
            "created_at": iso(self.created),
            "updated_at": iso(self.updated),
        }

    def charge(self) -> dict[str, Any]:
        return {"id": f"ch_{self.id:04d}", "object": "charge", "amount": self.value, "created": self.created}

    def ticket(self) -> dict[str, Any]:
        return {"id": self.id, "subject": f"ticket {self.id}", "value": self.value, "updated_at": self.updated}


class Changes:
    """The changing records and their history (thread-safe)."""

    REPOS = ("r1", "r2")

    def __init__(self, records: int = 12, page_size: int = 5) -> None:
        base = int(time.time()) - 7200
        self.page_size = page_size
        self._lock = threading.Lock()
        self._records = {i: Record(i, self.REPOS[i % 2], base + 60 * i, base + 60 * i, i) for i in range(1, records + 1)}
        self.versions: list[Record] = list(self._records.values())
        self.bodies: list[Any] = []  # the body of each Zendesk export request, parsed

    def touch(self, *ids: int, at: int | None = None) -> None:
        """A new version of each record, stamped now (or `at`: a late update)."""
        with self._lock:
            for i in ids:
                record = replace(self._records[i], updated=int(time.time()) if at is None else at, value=self._records[i].value + 100)
                self._records[i] = record
                self.versions.append(record)

    def add(self, repo: str = "r1", at: int | None = None) -> Record:
        """A new record, created now (or `at`: one that shows up late)."""
        with self._lock:
            stamp = int(time.time()) if at is None else at
            record = Record(max(self._records) + 1, repo, stamp, stamp, 1000 + len(self._records))
            self._records[record.id] = record
            self.versions.append(record)
            return record

    def _all(self) -> list[Record]:
        with self._lock:
            return list(self._records.values())

    def handle(self, method: str, parts: list[str], params: dict[str, str], body: bytes, api_url: str) -> Answer | None:
        """The answer to a request under /acme/gh, /acme/stripe or /acme/zendesk (None: not one of these)."""
        if method == "GET" and len(parts) == 4 and parts[:2] == ["gh", "orgs"] and parts[3] == "repos":
            return 200, [{"name": repo, "full_name": f"{parts[2]}/{repo}"} for repo in self.REPOS], []
        if method == "GET" and len(parts) == 5 and parts[:2] == ["gh", "repos"] and parts[4] == "issues":
            return self._issues(parts[2], parts[3], params, api_url)
        if method == "GET" and parts == ["stripe", "charges"]:
            return self._charges(params)
        if method == "POST" and parts == ["zendesk", "incremental", "tickets"]:
            return self._tickets(params, body, api_url)
        return None

    def _issues(self, org: str, repo: str, params: dict[str, str], api_url: str) -> Answer:
        since = params.get("since")
        try:
            floor = int(dt.datetime.fromisoformat(since).timestamp()) if since else 0
        except ValueError:
            return 422, {"message": "Validation Failed", "errors": [{"field": "since"}]}, []
        found = sorted((r for r in self._all() if r.repo == repo and r.updated >= floor), key=lambda r: (r.updated, r.id))
        size, page = int(params.get("per_page", "30")), int(params.get("page", "1"))
        pages = max(1, -(-len(found) // size))
        here = f"{api_url}/acme/gh/repos/{org}/{repo}/issues?"
        links = [f'<{here}{urlencode({**params, "page": page + 1})}>; rel="next"'] if page < pages else []
        links.append(f'<{here}{urlencode({**params, "page": pages})}>; rel="last"')
        return 200, [r.issue() for r in found[(page - 1) * size : page * size]], [("Link", ", ".join(links))]

    def _charges(self, params: dict[str, str]) -> Answer:
        floor = int(params.get("created[gte]", "0"))
        found = sorted((r for r in self._all() if r.created >= floor), key=lambda r: (-r.created, -r.id))
        after, limit = params.get("starting_after"), int(params.get("limit", "10"))
        start = next((i + 1 for i, r in enumerate(found) if r.charge()["id"] == after), 0) if after else 0
        chunk = found[start : start + limit]
        return 200, {"object": "list", "url": "/v1/charges", "has_more": start + limit < len(found), "data": [r.charge() for r in chunk]}, []

    def _tickets(self, params: dict[str, str], body: bytes, api_url: str) -> Answer:
        try:
            window = json.loads(body or b"{}")
            self.bodies.append(window)
            start, end = int(window["start_time"]), window.get("end_time")
            end = int(end) if end is not None else None
        except (ValueError, KeyError, TypeError):
            return 400, {"error": "InvalidPaginationParameter", "description": "start_time is a Unix epoch time"}, []
        found = sorted((r for r in self._all() if start <= r.updated and (end is None or r.updated <= end)), key=lambda r: (r.updated, r.id))
        page, size = int(params.get("page", "1")), self.page_size
        chunk = found[(page - 1) * size : page * size]
        last = page * size >= len(found)
        following = None if last else f"{api_url}/acme/zendesk/incremental/tickets?{urlencode({'page': page + 1})}"
        return (
            200,
            {
                "tickets": [r.ticket() for r in chunk],
                "count": len(chunk),
                "end_time": chunk[-1].updated if chunk else start,
                "end_of_stream": last,
                "next_page": following,
            },
            [],
        )
