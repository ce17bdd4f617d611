"""The emulated vendor: an API origin and an object-store origin on loopback.

Two stdlib ``ThreadingHTTPServer`` instances (HTTP/1.1 keep-alive, daemon
threads). Every request reads ``Emulator.config`` afresh, so tests can change
faults, quotas or latency between (or during) runs. ``stop()`` drops open
connections and wakes sleeping faults, so it never hangs on a slow client.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import re
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from . import data
from .acme import Acme
from .config import EmulatorConfig
from .data import ApiError
from .faults import REPLACING_KINDS, Fault, pick_fault
from .stats import RequestRecord, Stats

__all__ = ["Emulator", "serve"]

WRITE_CHUNK = 1 << 20  # big writes keep loopback throughput in the GB/s range
DEFAULT_HUGE_JSON = 16 << 20


@dataclass
class _Response:
    """A response before transmission; faults may alter how it is delivered."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    length: int = 0
    chunks: Iterable[bytes] = ()
    safe_cut: int | None = None  # truncation point that is not a gzip member boundary


def _json(status: int, obj: Any, headers: Iterable[tuple[str, str]] = ()) -> _Response:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return _Response(status, [("Content-Type", "application/json"), *headers], len(raw), (raw,))


def _error(status: int, message: str | None = None, headers: Iterable[tuple[str, str]] = ()) -> _Response:
    return _json(status, ApiError(status, message).body(), headers)


def _limit(chunks: Iterable[bytes], limit: int) -> Iterator[bytes]:
    """The first ``limit`` bytes of a chunk stream."""
    left = limit
    for c in chunks:
        if left <= 0:
            return
        if len(c) > left:
            c = c[:left]
        left -= len(c)
        yield c


def _rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    size = max(1, size)
    for c in chunks:
        for i in range(0, len(c), size):
            yield c[i : i + size]


def _huge_json(size: int) -> Iterator[bytes]:
    """A JSON body that starts fine and goes on for ``size`` bytes, generated on the fly."""
    prefix = b'{"code":200,"page_num":1,"list":['
    item = b'{"date":"2024-01-01","device":"iphone","estimate":12345,"country":"US"},'
    block = item * (WRITE_CHUNK // len(item))
    yield prefix[:size]
    left = size - len(prefix)
    while left > 0:
        piece = block if left >= len(block) else block[:left]
        left -= len(piece)
        yield piece


def _authorized(header: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, scheme case-insensitive."""
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def _s3_error(status: int, code: str, message: str) -> _Response:
    raw = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'.encode()
    return _Response(status, [("Content-Type", "application/xml")], len(raw), (raw,))


class _Handler(BaseHTTPRequestHandler):
    """One connection; serves either origin depending on the server it belongs to."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 300  # idle keep-alive connections do not live forever
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silent: tests and benchmarks would drown in access logs."""

    # -- methods ------------------------------------------------------------
    def do_GET(self) -> None:
        self._handle(head=False)

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def do_POST(self) -> None:  # the Acme vendor's token endpoint, searches and reports
        self._handle(head=False)

    def _not_allowed(self) -> None:
        self._read_body()
        self._send(_error(405), None, head=False)

    do_PUT = do_DELETE = do_PATCH = _not_allowed

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- dispatch -----------------------------------------------------------
    def _handle(self, head: bool) -> None:
        emu = self.server.emu
        origin = self.server.origin
        cfg = emu.config
        target = self.path
        internal = target.startswith("/_emulator/")
        self.body = self._read_body()
        try:
            latency = (cfg.latency_ms if origin == "api" else cfg.files_latency_ms) / 1000
            if latency and not internal and emu._stopping.wait(latency):
                return self._abort()
            fault = None if internal else pick_fault(cfg.faults, origin, target, self._match_extra(origin, target))
            if fault is not None and fault.kind == "stall" and emu._stopping.wait(fault.seconds):
                return self._abort()
            if fault is not None and fault.kind in REPLACING_KINDS:
                resp = self._fault_response(fault)
            else:
                try:
                    if origin == "auth":
                        resp = self._acme(emu.acme.token(self.command, self.headers, self.body))
                    else:
                        resp = self._api(cfg) if origin == "api" else self._files(cfg, fault)
                except ApiError as e:
                    resp = _error(e.status, e.message)
                except Exception as e:  # noqa: BLE001 - a bug in the emulator must still answer like a server
                    resp = _error(500, f"emulator error: {type(e).__name__}")
            self._send(resp, fault, head, record=not internal)
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True

    @staticmethod
    def _match_extra(origin: str, target: str) -> tuple[str, ...]:
        """On the files origin, let fault regexes see the object name as ``name=<name>``."""
        path = urlsplit(target).path
        if origin == "files" and path.startswith("/objects/"):
            return (f"name={unquote(path[len('/objects/') :])}",)
        return ()

    def _abort(self) -> None:
        self.close_connection = True
        self.server.mark_aborted(self.connection)

    def _fault_response(self, f: Fault) -> _Response:
        st = f.effective_status
        if f.kind == "status":
            return _error(st, None, [("Retry-After", f.retry_after)] if f.retry_after is not None else [])
        if f.kind == "body":
            raw = f.body or b""
            return _Response(st, [("Content-Type", f.content_type)], len(raw), (raw,))
        if f.kind == "deep_json":
            raw = b'{"code":200,"data":' + b'{"a":' * f.depth + b"1" + b"}" * f.depth + b"}"
            return _Response(st, [("Content-Type", "application/json")], len(raw), (raw,))
        if f.kind == "huge_json":
            size = f.size if f.size > 0 else DEFAULT_HUGE_JSON
            return _Response(st, [("Content-Type", "application/json")], size, _huge_json(size))
        # echo_secret: a careless vendor echoing credentials back; clients must redact it
        query = urlsplit(self.path).query
        auth = self.headers.get("Authorization")
        msg = f"service unavailable for request with authorization={auth} query={query}"
        return _error(st, msg)

    # -- API origin ---------------------------------------------------------
    def _api(self, cfg: EmulatorConfig) -> _Response:
        emu = self.server.emu
        parts = urlsplit(self.path)
        path, raw_query = parts.path, parts.query
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        if path == "/_emulator/stats":
            return _json(200, emu.stats.summary(include_requests=params.get("requests") == "1"))
        if path.startswith("/acme/"):
            if not emu._admit(cfg):
                return _error(429)
            return self._acme(emu.acme.handle(self.command, path, params, self.headers, self.body, emu.api_url, emu.files_url, cfg.token))
        if self.command != "GET" and self.command != "HEAD":
            raise ApiError(405, "method not allowed")
        if not _authorized(self.headers.get("Authorization"), cfg.token):
            return _error(401)
        if not emu._admit(cfg):
            ra = [("Retry-After", str(cfg.quota_retry_after))] if cfg.quota_retry_after is not None else []
            return _error(429, None, ra)
        if path == "/v2/bulk/get-bulk-urls":
            names = data.bulk_file_names(
                params.get("metric_bundles", ""),
                params.get("start_date", ""),
                params.get("end_date", ""),
                params.get("granularity") or "daily",
                cfg.metric_files,
                tuple(cfg.dimensions),
            )
            base = emu.api_url
            urls = [f"{base}/v2/bulk/data?name={n}&signature={data.name_signature(n)}" for n in names]
            return _json(200, {"code": 200, "data": {"urls": urls}})
        if path == "/v2/bulk/data":
            name, sig = params.get("name"), params.get("signature", "")
            if not name:
                raise ApiError(400, "missing parameter: name")
            if not hmac.compare_digest(sig.encode(), data.name_signature(name).encode()):
                raise ApiError(403, "invalid signature")
            loc = (
                f"{emu.files_url}/objects/{quote(name, safe='/')}?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                f"&X-Amz-Expires=3600&X-Amz-Signature={data.object_signature(name)}"
            )
            return _Response(302, [("Location", loc)], 0, ())
        if path.startswith("/v1.3/"):
            return _json(200, data.page_body(path, raw_query, params, cfg.page_size))
        raise ApiError(404, f"unknown endpoint: {path}")

    @staticmethod
    def _acme(resp: Any) -> _Response:
        return _Response(resp.status, resp.headers, len(resp.body), (resp.body,))

    # -- files origin (object store) -----------------------------------------
    def _files(self, cfg: EmulatorConfig, fault: Fault | None) -> _Response:
        parts = urlsplit(self.path)
        if not parts.path.startswith("/objects/"):
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        name = unquote(parts.path[len("/objects/") :])
        sig = dict(parse_qsl(parts.query)).get("X-Amz-Signature", "")
        if not hmac.compare_digest(sig.encode(), data.object_signature(name).encode()):
            return _s3_error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match.")
        size = cfg.file_size_for(name)
        total = data.file_length(name, size)
        etag = '"' + hashlib.md5(f"{name}:{size}".encode()).hexdigest() + '"'
        headers = [("Content-Type", "application/gzip"), ("Accept-Ranges", "bytes"), ("ETag", etag)]
        rng = self.headers.get("Range")
        if rng and (fault is None or fault.kind not in ("truncate_gzip",)):
            m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", rng)
            if m and (m.group(1) or m.group(2)):
                a, b = m.groups()
                if a:
                    start, stop = int(a), (min(total, int(b) + 1) if b else total)
                else:
                    start, stop = max(0, total - int(b)), total
                if start >= total or stop <= start:
                    return _Response(416, [("Content-Range", f"bytes */{total}")], 0, ())
                headers.append(("Content-Range", f"bytes {start}-{stop - 1}/{total}"))
                chunks = data.iter_file_range(name, size, start, stop, WRITE_CHUNK)
                return _Response(206, headers, stop - start, chunks)
        cut = total // 2
        bounds = set(data.member_boundaries(name, size))
        while cut in bounds and cut > 1:
            cut -= 1
        return _Response(200, headers, total, data.iter_file_chunks(name, size, WRITE_CHUNK), safe_cut=cut)

    # -- transmission ---------------------------------------------------------
    def _compressed_json(self, headers: list[tuple[str, str]]) -> bool:
        """Whether to gzip this answer: a JSON one, to a client that accepts gzip, if configured."""
        accepted = (self.headers.get("Accept-Encoding") or "").lower()
        is_json = ("Content-Type", "application/json") in headers
        return self.server.emu.config.compress_json and is_json and "gzip" in accepted

    def _send(self, resp: _Response, fault: Fault | None, head: bool, record: bool = True) -> None:
        kind = fault.kind if fault is not None else None
        headers, length, chunks = list(resp.headers), resp.length, resp.chunks
        if kind == "truncate_gzip":
            length = resp.safe_cut if resp.safe_cut is not None else length // 2
            chunks = _limit(chunks, length)
        elif kind == "gzip_encoding":
            headers.append(("Content-Encoding", "gzip"))
        elif kind is None and self._compressed_json(headers):
            body = gzip.compress(b"".join(chunks))
            headers.append(("Content-Encoding", "gzip"))
            length, chunks = len(body), (body,)
        if record:
            encoding = dict(headers).get("Content-Encoding")
            self.server.emu._record(self.server.origin, self.path, resp.status, self.headers.get("Authorization"), encoding)
        self.send_response(resp.status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if head:
            return
        out = self.wfile
        if kind in ("cut", "reset_mid_body"):
            for c in _limit(chunks, length // 2):
                out.write(c)
            out.flush()
            return self._abort()
        if kind == "drip":
            stopping = self.server.emu._stopping
            for c in _rechunk(chunks, fault.chunk if fault else 1024):
                out.write(c)
                if stopping.wait(fault.interval if fault else 0.05):
                    return self._abort()
            return
        rate = self.server.emu.config.bytes_per_second
        if rate:
            started, sent, stopping = time.monotonic(), 0, self.server.emu._stopping
            for c in _rechunk(chunks, 64 << 10):
                out.write(c)
                sent += len(c)
                if stopping.wait(max(0.0, started + sent / rate - time.monotonic())):
                    return self._abort()
            return
        for c in chunks:
            out.write(c)


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks its connections so stop() can drop them."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], emu: Emulator, origin: str) -> None:
        self.emu = emu
        self.origin = origin
        self._conns: set[socket.socket] = set()
        self._aborted: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # skip HTTPServer's getfqdn() reverse lookup: it can take seconds on odd resolvers
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def mark_aborted(self, request: socket.socket) -> None:
        """Close this connection with a reset instead of a clean FIN."""
        try:
            request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        with self._conns_lock:
            self._aborted.add(request)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
            aborted = request in self._aborted
            self._aborted.discard(request)
        if aborted:
            self.close_request(request)
        else:
            super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Shut down every open connection, waking handlers blocked in recv/send."""
        with self._conns_lock:
            conns = list(self._conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, OSError)):
            return  # clients hanging up mid-response is normal here
        super().handle_error(request, client_address)


class Emulator:
    """The emulated vendor: ``api_url`` (JSON + bulk API) and ``files_url`` (object store)."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        host: str = "127.0.0.1",
        api_port: int = 0,
        files_port: int = 0,
        auth_port: int = 0,
    ) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self.acme = Acme()  # the second vendor, under /acme/ (its token endpoint: auth_url)
        self.host = host
        self.stats = Stats()
        self._ports = (api_port, files_port, auth_port)
        self._servers: dict[str, _Server] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._quota_lock = threading.Lock()
        self._quota_times: deque[float] = deque()

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> Emulator:
        """Bind both origins and serve them from background threads."""
        if self._servers:
            return self
        self._stopping = threading.Event()
        try:
            for origin, port in zip(("api", "files", "auth"), self._ports, strict=True):
                self._servers[origin] = _Server((self.host, port), self, origin)
        except BaseException:
            for srv in self._servers.values():
                srv.server_close()
            self._servers.clear()
            raise
        for origin, srv in self._servers.items():
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, name=f"emulator-{origin}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        """Stop both origins, drop open connections and wake stalled handlers."""
        self._stopping.set()
        servers = list(self._servers.values())
        for srv in servers:
            srv.shutdown()
        for srv in servers:
            srv.drop_connections()
            srv.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
        self._servers.clear()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------
    def _url(self, origin: str) -> str:
        srv = self._servers.get(origin)
        if srv is None:
            raise RuntimeError("emulator is not running; call start() first")
        return f"http://{self.host}:{srv.server_port}"

    @property
    def api_url(self) -> str:
        """Origin of the vendor API, e.g. ``http://127.0.0.1:PORT``."""
        return self._url("api")

    @property
    def files_url(self) -> str:
        """Origin of the object store the bulk redirects point at."""
        return self._url("files")

    @property
    def auth_url(self) -> str:
        """Origin of the Acme vendor's OAuth2 token endpoint (`POST /oauth/token`)."""
        return self._url("auth")

    # -- helpers for tests ----------------------------------------------------------
    def file_size_for(self, name: str) -> int:
        """Target size of a bulk file under the current config."""
        return self.config.file_size_for(name)

    def file_length_for(self, name: str) -> int:
        """Exact Content-Length served for a bulk file under the current config."""
        return data.file_length(name, self.config.file_size_for(name))

    def file_bytes_for(self, name: str) -> bytes:
        """Exact bytes served for a (small) bulk file under the current config."""
        return data.file_bytes(name, self.config.file_size_for(name))

    def reset_quota(self) -> None:
        """Forget calls counted against requests_per_minute."""
        with self._quota_lock:
            self._quota_times.clear()

    # -- internals used by the handler ----------------------------------------
    def _admit(self, cfg: EmulatorConfig) -> bool:
        """Sliding-window quota: only accepted calls count, as with the vendor's per-key quota."""
        if cfg.requests_per_minute is None:
            return True
        with self._quota_lock:
            now = time.monotonic()
            q = self._quota_times
            while q and now - q[0] >= cfg.quota_window_s:
                q.popleft()
            if len(q) >= cfg.requests_per_minute:
                return False
            q.append(now)
            return True

    def _record(self, origin: str, target: str, status: int, auth: str | None, encoding: str | None = None) -> None:
        self.stats.record(RequestRecord(time.monotonic(), time.time(), origin, target, status, auth, encoding))


def serve(
    host: str = "127.0.0.1",
    api_port: int = 8080,
    files_port: int = 0,
    config: EmulatorConfig | None = None,
    acme_auth: str | None = None,
) -> None:
    """Run the emulator in the foreground until SIGINT/SIGTERM (for ``apilake emulator``);
    ``acme_auth`` picks the auth scheme the Acme vendor accepts."""
    emu = Emulator(config or EmulatorConfig(), host, api_port, files_port)
    if acme_auth:
        emu.acme.config.auth = acme_auth
    emu.start()
    done = threading.Event()
    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: done.set())
    except ValueError:  # not the main thread: rely on KeyboardInterrupt / the caller
        pass
    try:
        print(f"api: {emu.api_url}")
        print(f"files: {emu.files_url}")
        print(f"token: {emu.config.token}")
        print(f"auth: {emu.auth_url} (the Acme vendor's OAuth2 token endpoint: POST /oauth/token)", flush=True)
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        emu.stop()
