"""Every request of a source over libcurl, driven by the event loop (pycurl's `AsyncCurlMulti`).

Why libcurl on the loop: under concurrency it cost the least CPU per GB and per request of the
clients measured (httpx, aiohttp, a blocking libcurl per thread; `bench/micro.py`, figures in
`bench/results/notes.md`). So the JSON pages and the file bodies of a source go through one
libcurl multi handle on the loop, without threads or copies.

libcurl hands over a body one socket read (~16 KiB) at a time: anything per hand-over that is
written in Python and touches the event loop costs more than the bytes. So the write callback
only counts, checksums and gathers chunks; the reader (`batches()`) is woken once per `BATCH`
(1 MiB) and gets the batch as a list of chunks (no copy: a local lake writes it with one
`writev`).

The checks (`StreamCheck`) run where they cost least: the length and a CRC checksum inline as
chunks arrive; inflating (`verify: gzip`) and sha256 on a pool thread, a batch at a time, one
batch in flight per transfer while the next is read, so many transfers check on every core and
the loop stays free. Batches wait for the writer in memory; past `AHEAD` bytes the transfer
pauses (libcurl stops reading the socket), so memory per transfer is bounded whatever the file
size. A body libcurl inflates never pauses: while paused, libcurl goes on inflating into a
buffer of its own and fails the transfer, or the unpause, once that passes ~75 MB
(CURLE_TOO_LARGE, curl#16280); such a body (a JSON page, held whole anyway) is bounded by its
`StreamCheck` instead, which ends the transfer inside the write callback.

One `Download` is one HTTP request (one hop). libcurl never follows redirects: the source's client
decides each hop and its headers (credentials only to its own origin). A file body is landed as
it came; a JSON body may come compressed (`decode=True`), and libcurl inflates it.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from apilake.errors import IntegrityError, TransferError
from apilake.integrity import StreamCheck

if TYPE_CHECKING:
    import pycurl  # imported where used: only a run that downloads a file pays for it

BUFFER = 512 << 10  # libcurl's largest receive buffer: fewer callbacks per MiB
BATCH = 1 << 20  # bytes gathered before the reader is woken: one write and one check hand-over per batch
AHEAD = 2 << 20  # bytes read but not yet written before the transfer pauses
ERROR_BODY_BYTES = 2048  # kept of a non-2xx body, for the error message

CURLOPT_SUPPRESS_CONNECT_HEADERS = 265  # libcurl ≥ 7.54; pycurl does not name it
CURLE_UNSUPPORTED_PROTOCOL = 1
CURLE_SSL_CONNECT_ERROR = 35  # a failed handshake (not retried), or a reset during it (retried, like any reset)
CURLE_WRITE_ERROR = 23

#: libcurl errors that say the TLS session failed: retrying does not help.
TLS_ERRORS = frozenset({35, 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91, 98})


@dataclass(frozen=True, slots=True)
class Environment:
    """What the environment says that libcurl does not read itself, as httpx (and most HTTP
    tools) would: a CA bundle or folder (`SSL_CERT_FILE`, `SSL_CERT_DIR`), and an upper-case
    `HTTP_PROXY` for `http:` URLs (libcurl reads only `http_proxy`, a precaution for CGI programs).
    `https_proxy`, `HTTPS_PROXY`, `all_proxy` and `no_proxy` libcurl reads on its own."""

    always: tuple[tuple[str, str], ...] = ()  # (pycurl option name, value) for every request
    http_proxy: tuple[tuple[str, str], ...] = ()  # for `http:` URLs only

    @classmethod
    def of(cls, environ: Mapping[str, str]) -> Environment:
        ca = (("CAINFO", environ.get("SSL_CERT_FILE", "")), ("CAPATH", environ.get("SSL_CERT_DIR", "")))
        proxy: tuple[tuple[str, str], ...] = ()
        if not environ.get("http_proxy") and environ.get("HTTP_PROXY"):
            proxy = (("PROXY", environ["HTTP_PROXY"]),)
            skip = environ.get("no_proxy") or environ.get("NO_PROXY")
            proxy += (("NOPROXY", skip),) if skip else ()
        return cls(tuple((option, value) for option, value in ca if value), proxy)

    def for_url(self, url: str) -> tuple[tuple[str, str], ...]:
        return self.http_proxy if url[:5].lower() == "http:" else ()


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    read: float  # nothing received for this long: the try fails (`Download._watchdog`)


class Transport:
    """The libcurl side of one source's client: its multi handle and its check threads."""

    def __init__(self, user_agent: str, timeouts: Timeouts, threads: int) -> None:
        self._user_agent = user_agent
        self.timeouts = timeouts
        self.settings = Environment.of(os.environ)
        # Checking is CPU-bound: threads beyond the cores only take turns for the GIL (and a
        # context switch at each turn) as they enter and leave the inflater.
        self._threads = max(1, min(threads, os.cpu_count() or 1))
        self._multi: Any = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def handle(self) -> Any:
        import pycurl  # ~45 ms to load: only once a request is sent

        if self._multi is None:
            self._multi = pycurl.AsyncCurlMulti()  # its connection cache serves every handle
        curl = pycurl.Curl()
        curl.setopt(pycurl.NOSIGNAL, 1)
        curl.setopt(pycurl.BUFFERSIZE, BUFFER)
        curl.setopt(pycurl.USERAGENT, self._user_agent)
        curl.setopt(pycurl.FOLLOWLOCATION, 0)
        # A path is sent as planned: libcurl would resolve `..` and `%2E%2E` segments, and a matrix
        # or fan-out value `..` (encoded by `plan.join_url`) would climb out of its path.
        curl.setopt(pycurl.PATH_AS_IS, 1)
        # http and https only: a listed URL or a Location of `file://…` must not read local files
        # into an error message, nor any other scheme reach what libcurl can speak.
        curl.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        # Behind an https proxy, libcurl would hand the proxy's own "200 Connection established"
        # head to the header callback as if it were the server's answer.
        curl.setopt(getattr(pycurl, "SUPPRESS_CONNECT_HEADERS", CURLOPT_SUPPRESS_CONNECT_HEADERS), 1)
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(self.timeouts.connect * 1000)))
        curl.setopt(pycurl.LOW_SPEED_LIMIT, 1)
        curl.setopt(pycurl.LOW_SPEED_TIME, max(1, round(self.timeouts.read)))
        for option, value in self.settings.always:
            curl.setopt(getattr(pycurl, option), value)
        return curl

    def pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self._threads, "apilake-check")
        return self._pool

    async def close(self) -> None:
        if self._multi is not None:
            await self._multi.aclose()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class Download:
    """One request. Await `started()`; on a 2xx, iterate `batches()` for the body, checked.

    `status_code`, `reason_phrase`, `headers` (lower-case names), `is_redirect`, `is_success` and
    `error_body` are what the client needs of any response to follow redirects and report errors.
    """

    def __init__(
        self,
        transport: Transport,
        url: str,
        make_check: Callable[[int | None], StreamCheck],
        *,
        method: str = "GET",
        body: bytes | None = None,
        decode: bool = False,
    ) -> None:
        self.url = url
        self.method = method
        self.body = body
        self.decode = decode
        self.status_code = 0
        self.reason_phrase = ""
        self.headers: dict[str, str] = {}
        self.error_body = b""
        self.check: StreamCheck | None = None
        self._transport = transport
        self._make_check = make_check
        self._pending: collections.deque[list[bytes]] = collections.deque()  # whole batches for the reader
        self._gathering: list[bytes] = []  # libcurl's chunks of the batch being filled
        self._gathered = 0
        self._held = 0  # bytes in both
        self._paused = False
        self._wake = asyncio.Event()
        self._head = False
        self._error: BaseException | None = None
        self._curl: Any = None
        self._done: asyncio.Future[Any] | None = None
        self.error_body_cut = False  # a non-2xx body was cut after ERROR_BODY_BYTES
        self._heard = 0.0  # when libcurl last handed over a head line or a chunk (monotonic)
        self._watch: asyncio.TimerHandle | None = None

    @property
    def is_redirect(self) -> bool:
        return self.status_code in (301, 302, 303, 307, 308) and "location" in self.headers

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def start(self, headers: dict[str, str]) -> None:
        import pycurl

        curl = self._curl = self._transport.handle()
        curl.setopt(pycurl.URL, self.url)
        if self.method != "GET":  # with a body (Content-Length: 0 if none), as a POST or under its own name
            sent = self.body or b""
            curl.setopt(pycurl.POSTFIELDSIZE, len(sent))  # before the bytes: they may hold NULs
            curl.setopt(pycurl.COPYPOSTFIELDS, sent)
            if self.method != "POST":
                curl.setopt(pycurl.CUSTOMREQUEST, self.method)
            typed = self.body is None or any(k.lower() == "content-type" for k in headers)  # the source's own wins
            headers = {**({} if typed else {"Content-Type": "application/json"}), **headers, "Expect": ""}  # no 100-continue
        if self.decode:
            curl.setopt(pycurl.ACCEPT_ENCODING, "")  # every encoding libcurl can inflate
        for option, value in self._transport.settings.for_url(self.url):
            curl.setopt(getattr(pycurl, option), value)
        if headers:  # a fresh handle per request: no header of an earlier request can linger
            curl.setopt(pycurl.HTTPHEADER, [f"{k}: {v}" for k, v in headers.items()])
        curl.setopt(pycurl.HEADERFUNCTION, self._on_header)
        curl.setopt(pycurl.WRITEFUNCTION, self._on_body)
        self._done = self._transport._multi.add_handle(curl)
        self._done.add_done_callback(lambda _: self._wake.set())
        self._heard = time.monotonic()
        self._watch = asyncio.get_running_loop().call_later(self._transport.timeouts.read, self._watchdog)

    async def started(self) -> None:
        """Wait for the response's head (a 2xx) or its end (anything else, or a failure)."""
        while not self._head and not self._finished():
            await self._waited()
        if not self._head:
            self._raise_failure()

    async def batches(self) -> AsyncIterator[list[bytes]]:
        """The body of a 2xx as lists of chunks of about `BATCH` bytes (the last one shorter),
        checked; raises when the transfer or its check fails.

        The check's last word (`finish()`) comes after the last batch and before the loop ends:
        a writer that commits only once the loop has ended never commits a damaged body.
        """
        check = self.check
        assert check is not None
        checking: asyncio.Future[None] | None = None
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending and self._finished() and self._error is None and self._gathering:
                self._seal_batch()  # the body's tail
            if self._pending:
                batch = self._pending.popleft()
                self._held -= sum(map(len, batch))
                if self._paused and self._held < AHEAD // 2 and self._error is None:
                    self._resume()
                if check.heavy and checking is None and self._finished() and not self._pending and not self._gathering:
                    check.digest(batch)  # the whole body in one batch (a small file): cheaper here than a hand-over
                elif check.heavy:
                    if checking is not None:
                        await checking
                    checking = loop.run_in_executor(self._transport.pool(), check.digest, batch)
                yield batch
                continue
            if self._finished():
                break
            await self._waited()
        self._raise_failure()
        if checking is not None:
            await checking
        check.finish()

    async def aclose(self) -> None:
        """End the transfer if it still runs (an error or cancellation on the caller's side)."""
        if self._watch is not None:
            self._watch.cancel()
        if self._done is not None and not self._done.done():
            self._transport._multi.remove_handle(self._curl)
        self._release()

    def _watchdog(self) -> None:
        """`timeouts.read`: fail the transfer once the server has sent nothing for that long.

        libcurl's own low-speed limit counts whole seconds, and on a multi handle shared with
        other transfers its timer can go unserved (a server that never answered was waited for
        until `timeouts.total`), so the loop keeps this watch itself. A transfer paused because
        the writer is behind is not the server's fault: the wait starts again on resuming."""
        if self._finished():
            return
        import pycurl

        read = self._transport.timeouts.read
        now = time.monotonic()
        if self._paused or not self._curl.getinfo(pycurl.PRETRANSFER_TIME):
            self._heard = now  # paused, or still connecting (`timeouts.connect`, libcurl's, holds then)
        if now - self._heard >= read:
            self._error = TransferError(f"timed out (nothing received for {read:g} s, timeouts.read)", transient=True)
            self._wake.set()
            return
        self._watch = asyncio.get_running_loop().call_later(self._heard + read - now, self._watchdog)

    # -- inside libcurl's callbacks, on the loop --------------------------------------------

    def _on_header(self, line: bytes) -> int | None:
        self._heard = time.monotonic()
        if line.startswith(b"HTTP/") and self._head:  # a second head after a 2xx was accepted: never its body
            self._error = TransferError("the response had a second head after its 2xx (a proxy's?)", transient=False)
            self._wake.set()
            return 0  # ends the transfer
        if line.startswith(b"HTTP/"):
            parts = line.decode("latin-1").split(None, 2)
            self.status_code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            self.reason_phrase = parts[2].strip() if len(parts) > 2 else _phrase(self.status_code)  # HTTP/2 sends none
            self.headers = {}
        elif b":" in line:
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            # A field sent more than once (Link, say) reads as one, its values comma-joined (RFC 9110 5.3).
            self.headers[name] = f"{self.headers[name]}, {value}" if name in self.headers else value
        elif line in (b"\r\n", b"\n") and self.is_success and not self._head:
            length = self.headers.get("content-length", "")
            if self.decode and "content-encoding" in self.headers:
                length = ""  # of the encoded body, which libcurl checks itself
            self.check = self._make_check(int(length) if length.isdigit() else None)
            self._head = True
            self._wake.set()
        return None

    def _on_body(self, chunk: bytes) -> int | None:
        import pycurl

        self._heard = time.monotonic()
        if self.check is None:  # not a 2xx: keep the start of the body for the error message
            self.error_body += chunk[: ERROR_BODY_BYTES - len(self.error_body)]
            if len(self.error_body) >= ERROR_BODY_BYTES:
                self.error_body_cut = True
                return 0  # no need of the rest: a large or slow error body must not delay the retry
            return None
        if self._held >= AHEAD and not self.decode:
            self._paused = True
            return pycurl.WRITEFUNC_PAUSE  # libcurl hands this chunk over again on PAUSE_CONT
        try:
            self.check.count(chunk)
        except TransferError as exc:
            self._error = exc
            self._wake.set()
            return 0  # ends the transfer (CURLE_WRITE_ERROR)
        self._gathering.append(chunk)
        self._gathered += len(chunk)
        self._held += len(chunk)
        if self._gathered >= BATCH:
            self._seal_batch()
            self._wake.set()
        return None

    def _seal_batch(self) -> None:
        self._pending.append(self._gathering)
        self._gathering, self._gathered = [], 0

    # -- plumbing ----------------------------------------------------------------------------

    def _resume(self) -> None:
        """Unpause. libcurl hands the held data over inside this call, so whatever fails there
        (the check, the connection) fails the transfer: it is the body's failure, not apilake's."""
        import pycurl

        self._paused = False
        try:
            self._curl.pause(pycurl.PAUSE_CONT)
        except pycurl.error as exc:
            code, message = _curl_args(exc)
            self._error = self._error or _curl_error(code, message, self.check)  # the check's own word first

    def _finished(self) -> bool:
        return self._error is not None or (self._done is not None and self._done.done())

    async def _waited(self) -> None:
        self._wake.clear()
        if not self._pending and not self._finished():
            await self._wake.wait()

    def _raise_failure(self) -> None:
        import pycurl

        if self._error is not None:
            raise self._error
        assert self._done is not None
        if self._done.cancelled():
            raise TransferError("transfer stopped", transient=True)
        exc = self._done.exception()
        if isinstance(exc, pycurl.error):
            code, message = _curl_args(exc)
            if code == CURLE_WRITE_ERROR and self.error_body_cut:
                return  # the error body was cut on purpose: the status is the answer
            raise _curl_error(code, message, self.check)
        if exc is not None:
            raise exc

    def _release(self) -> None:
        if self._curl is not None and (self._done is None or self._done.done()):
            self._curl.close()  # a fresh handle per request: connections live on in the multi handle
            self._curl = None


def _curl_args(exc: pycurl.error) -> tuple[int, str]:
    """A `pycurl.error`'s (code, message); an error of pycurl's own (a bad option) has a message only."""
    match exc.args:
        case (int() as code, str() as message):
            return code, message
        case _:
            return 0, str(exc)


def _curl_error(code: int, message: str, check: StreamCheck | None) -> TransferError:
    """A libcurl failure as a `TransferError` (the client adds the URL and redacts)."""
    if code == 18 and check is not None and check.expected_length is not None:  # CURLE_PARTIAL_FILE
        return IntegrityError(f"body ended after {check.size} of {check.expected_length} bytes (Content-Length)")
    if code == CURLE_UNSUPPORTED_PROTOCOL:
        return TransferError("not an http or https URL; apilake fetches files only over HTTP", transient=False)
    if code in TLS_ERRORS and not (code == CURLE_SSL_CONNECT_ERROR and "reset" in message.lower()):
        return TransferError(f"TLS error: {message}", transient=False)
    if code == 28:
        return TransferError(f"timed out ({message})", transient=True)
    if code in (6, 7):
        return TransferError(f"cannot connect: {message}", transient=True)
    return TransferError(message or f"libcurl error {code}", transient=True)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
