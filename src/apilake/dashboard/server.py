"""Serving the dashboard: a small threaded HTTP server from the standard library.

Read-only GETs of a few pages, on loopback by default: the standard library's threaded server
is enough, adds no dependency, and runs in a thread beside the scheduler's loop (which also
serves `/metrics` and `/healthz` through `routes`). Pages are built afresh from the
destination on each request, so they are never staler than the run records.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from apilake.dashboard import render_page, render_run
from apilake.jobfile import Job
from apilake.record import RecordCache, load_record
from apilake.status import inspect, window

log = logging.getLogger("apilake")

HTML = "text/html; charset=utf-8"
# Nothing but inline style and SVG: a page that cannot load anything from anywhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_RUN_ID = re.compile(r"[0-9A-Za-z.\-]{1,80}")

Response = tuple[int, str, bytes]  # status, content type, body
Route = Callable[[], Response]


@dataclass
class Dashboard:
    """The pages of one job's dashboard over one destination."""

    job: Job
    job_path: str
    destination: str
    days: int = 14
    dates: list[dt.date] | None = None  # fixed run dates (--from/--to); default: the last `days` and today
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    cache: RecordCache = field(default_factory=dict)  # finished run records, read once

    def index(self, *, single_file: bool = False) -> str:
        now = self.now()
        dates = self.dates or window(self.job.timezone, now, self.days, ahead=1)
        report = inspect(self.destination, self.job, dates, window(self.job.timezone, now, 1)[0], self.cache)
        return render_page(report, job_path=self.job_path, timezone=self.job.timezone, generated=now, single_file=single_file)

    def run(self, run_id: str) -> str | None:
        """A run's page, or None if no such record exists."""
        if not _RUN_ID.fullmatch(run_id):
            return None
        record = load_record(self.destination, self.job.s3, run_id)
        return render_run(record, generated=self.now()) if record is not None else None

    def respond(self, path: str) -> Response:
        if path in ("/", "/index.html"):
            return 200, HTML, self.index().encode()
        if path.startswith("/runs/"):
            page = self.run(path.removeprefix("/runs/"))
            if page is not None:
                return 200, HTML, page.encode()
        return 404, "text/plain; charset=utf-8", b"not found\n"


class DashboardServer(ThreadingHTTPServer):
    """Serves a `Dashboard` and any extra `routes` (path → handler) until `shutdown()`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], dashboard: Dashboard | None, routes: Mapping[str, Route] | None = None) -> None:
        self.dashboard = dashboard
        self.routes = dict(routes or {})
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="apilake-http", daemon=True)
        thread.start()
        return thread

    def respond(self, path: str) -> Response:
        if path in self.routes:
            return self.routes[path]()
        if self.dashboard is not None:
            return self.dashboard.respond(path)
        return 404, "text/plain; charset=utf-8", b"not found\n"


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "apilake"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        try:
            status, content_type, body = self.server.respond(path)
        except Exception:
            log.exception("dashboard: %s failed", path)
            status, content_type, body = 500, "text/plain; charset=utf-8", b"internal error; see the log\n"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        log.debug("http %s " + format, self.address_string(), *args)
