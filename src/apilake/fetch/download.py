"""File bodies over libcurl: one blocking transfer per body in a worker thread, checked where it is read.

Why not httpx, which carries the JSON requests: reading bodies under concurrency costs httpx
~1.2 CPU s per GB and aiohttp ~0.7, libcurl ~0.2 (`bench/micro.py`). So each file body is read by
a libcurl transfer in a thread of the source's pool, and the `StreamCheck` (length, checksum,
gzip) runs on each chunk in that same thread, as it arrives: no hand-over per chunk, and the
checks of many transfers run on every core (hashing and inflating release the GIL).

Checked chunks go to the event loop in batches of about a MiB, at most `AHEAD` batches ahead of
the writer: memory stays bounded per transfer whatever the file size, and a slow destination
slows the socket (libcurl waits in its write callback).

One `Download` is one HTTP request (one hop). Redirects are not followed by libcurl: the
source's client decides each hop, and which headers it gets (credentials only to its origin).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from apilake.errors import ApilakeError, IntegrityError, TransferError
from apilake.integrity import StreamCheck

BUFFER = 512 << 10  # libcurl's largest receive buffer: fewer callbacks per MiB
BATCH = 1 << 20  # checked bytes per hand-over to the event loop
AHEAD = 4  # batches a transfer may read ahead of its writer
ERROR_BODY_BYTES = 2048  # kept of a non-2xx body, for the error message
_POLL_S = 0.1  # how often a thread waiting for the writer looks whether it was aborted

#: libcurl errors that say the TLS session failed: retrying does not help.
TLS_ERRORS = frozenset({35, 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91, 98})


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    read: float  # no byte for this long: the transfer fails (libcurl's low-speed limit, whole seconds)


class Handles:
    """libcurl easy handles to reuse (each keeps its connections alive), one per running transfer."""

    def __init__(self, user_agent: str, timeouts: Timeouts) -> None:
        self._free: list[object] = []
        self._lock = threading.Lock()
        self._user_agent = user_agent
        self._timeouts = timeouts

    def take(self) -> object:
        with self._lock:
            if self._free:
                return self._free.pop()
        import pycurl  # ~45 ms to load: only once a file is fetched

        curl = pycurl.Curl()
        curl.setopt(pycurl.NOSIGNAL, 1)
        curl.setopt(pycurl.BUFFERSIZE, BUFFER)
        curl.setopt(pycurl.USERAGENT, self._user_agent)
        curl.setopt(pycurl.FOLLOWLOCATION, 0)
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(self._timeouts.connect * 1000)))
        curl.setopt(pycurl.LOW_SPEED_LIMIT, 1)
        curl.setopt(pycurl.LOW_SPEED_TIME, max(1, round(self._timeouts.read)))
        curl.setopt(pycurl.NOPROGRESS, 0)
        return curl

    def give_back(self, curl: object) -> None:
        with self._lock:
            self._free.append(curl)

    def close(self) -> None:
        with self._lock:
            free, self._free = self._free, []
        for curl in free:
            curl.close()  # type: ignore[attr-defined]


class Download:
    """One GET in a worker thread. Await `started()`; on a 2xx, iterate for the checked chunks.

    `status_code`, `headers` (lower-case names), `is_redirect`, `is_success` and `error_body` mirror
    what the client needs of any response to follow redirects and report errors.
    """

    def __init__(self, url: str, make_check: Callable[[int | None], StreamCheck]) -> None:
        self.url = url
        self.status_code = 0
        self.reason_phrase = ""
        self.headers: dict[str, str] = {}
        self.error_body = b""
        self.check: StreamCheck | None = None
        self._make_check = make_check
        self._loop = asyncio.get_running_loop()
        self._items: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        self._room = threading.Semaphore(AHEAD)
        self._aborted = False
        self._pending: list[bytes] = []
        self._held = 0
        self._error: BaseException | None = None
        self._head_sent = False
        self._lines: list[bytes] = []

    @property
    def is_redirect(self) -> bool:
        return self.status_code in (301, 302, 303, 307, 308) and "location" in self.headers

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    # -- the event loop's side ------------------------------------------------------------------

    def start(self, pool: concurrent.futures.Executor, handles: Handles, headers: dict[str, str]) -> None:
        pool.submit(self._run, handles, [f"{k}: {v}" for k, v in headers.items()])

    async def started(self) -> None:
        """Wait for the response's head (a 2xx) or its end (anything else, or a failure)."""
        kind, value = await self._items.get()
        if kind == "done" and value is not None:
            raise value  # type: ignore[misc]

    async def chunks(self) -> AsyncIterator[bytes]:
        """The checked chunks of a 2xx body; raises what the transfer or its check raised."""
        while True:
            kind, value = await self._items.get()
            if kind == "done":
                if value is not None:
                    raise value  # type: ignore[misc]
                return
            for chunk in value:  # type: ignore[attr-defined]
                yield chunk
            self._room.release()

    async def aclose(self) -> None:
        """Stop the transfer if it still runs (an error or cancellation on the loop's side)."""
        self._aborted = True
        self._room.release()

    # -- the worker thread's side ---------------------------------------------------------------

    def _run(self, handles: Handles, headers: list[str]) -> None:
        import pycurl

        curl = handles.take()
        error: BaseException | None = None
        try:
            curl.setopt(pycurl.URL, self.url)  # type: ignore[attr-defined]
            if headers:  # a reused handle keeps its last headers: another origin must get none
                curl.setopt(pycurl.HTTPHEADER, headers)  # type: ignore[attr-defined]
            else:
                curl.unsetopt(pycurl.HTTPHEADER)  # type: ignore[attr-defined]
            curl.setopt(pycurl.HEADERFUNCTION, self._header)  # type: ignore[attr-defined]
            curl.setopt(pycurl.WRITEFUNCTION, self._write)  # type: ignore[attr-defined]
            curl.setopt(pycurl.XFERINFOFUNCTION, self._progress)  # type: ignore[attr-defined]
            try:
                curl.perform()  # type: ignore[attr-defined]
            except pycurl.error as exc:
                if self._error is None:
                    code, message = exc.args
                    self._error = _curl_error(code, message, self)
            if self._error is None and self.check is not None:
                self._flush()
                self.check.finish()
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, raised there
            error = exc
        finally:
            curl.setopt(pycurl.HEADERFUNCTION, _ignore)  # type: ignore[attr-defined]
            curl.setopt(pycurl.WRITEFUNCTION, _ignore)  # type: ignore[attr-defined]
            curl.setopt(pycurl.XFERINFOFUNCTION, _no_progress)  # type: ignore[attr-defined]
            handles.give_back(curl)
        self._post("done", error or self._error)

    def _header(self, line: bytes) -> None:
        if line.startswith(b"HTTP/"):
            self._lines = []
            parts = line.decode("latin-1").split(None, 2)
            self.status_code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            self.reason_phrase = parts[2].strip() if len(parts) > 2 else ""
            self.headers = {}
        elif b":" in line:
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        elif line in (b"\r\n", b"\n") and self.is_success and not self._head_sent:
            length = self.headers.get("content-length", "")
            try:
                self.check = self._make_check(int(length) if length.isdigit() else None)
            except BaseException as exc:  # noqa: BLE001
                self._error = exc
                return
            self._head_sent = True
            self._post("head", None)

    def _write(self, chunk: bytes) -> int | None:
        if self._aborted:
            return 0  # libcurl ends the transfer (CURLE_WRITE_ERROR)
        if self.check is None:  # not a 2xx: keep the start of the body for the error message
            if len(self.error_body) < ERROR_BODY_BYTES:
                self.error_body += chunk[: ERROR_BODY_BYTES - len(self.error_body)]
            return None
        try:
            self.check.update(chunk)
        except ApilakeError as exc:
            self._error = exc
            return 0
        self._pending.append(chunk)
        self._held += len(chunk)
        if self._held >= BATCH:
            self._flush()
            if self._aborted:
                return 0
        return None

    def _progress(self, *_: int) -> int:
        return 1 if self._aborted else 0

    def _flush(self) -> None:
        if not self._pending:
            return
        while not self._room.acquire(timeout=_POLL_S):
            if self._aborted:
                return
        self._post("data", self._pending)
        self._pending, self._held = [], 0

    def _post(self, kind: str, value: object) -> None:
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


def _ignore(data: bytes) -> None:
    return None


def _no_progress(*_: int) -> int:
    return 0


def _curl_error(code: int, message: str, download: Download) -> TransferError:
    """A libcurl failure as a `TransferError` (the client adds the URL and redacts)."""
    check = download.check
    if code == 18 and check is not None and check.expected_length is not None:  # CURLE_PARTIAL_FILE
        return IntegrityError(f"body ended after {check.size} of {check.expected_length} bytes (Content-Length)", transient=True)
    if code in TLS_ERRORS:
        return TransferError(f"TLS error: {message}", transient=False)
    if code == 28:
        return TransferError(f"timed out ({message})", transient=True)
    if code in (6, 7):
        return TransferError(f"cannot connect: {message}", transient=True)
    return TransferError(message or f"libcurl error {code}", transient=True)
