"""A broken S3-compatible store for tests: an HTTP proxy in front of moto that alters uploads.

It forwards every request to the real (moto) server, but appends junk to the body of each
upload (`PutObject`, `UploadPart`) whose path contains `match`, as a store does that keeps the
aws-chunked framing of a request as data. Checksum headers of an altered request are dropped, so
the store accepts it: the point is a store that says yes and keeps other bytes. With
`drop_conditions` (and `match` matching nothing) it is instead a store that ignores conditional
writes. With `fail_part` it answers every upload of that part number with an S3 500
(`InternalError`), retries included, `fail_after` seconds late: a store that fails one part. With `match=None` it alters
nothing: a witness of what reached the store.

Every request is kept in `seen` (what a client signed, with which key and region, is only visible
on the wire). With `tls` it serves HTTPS (a store behind a certificate of its own), and a client
may take it for its HTTP proxy (absolute-form requests, the Host header passed on as the client
sent it: a virtual-hosted bucket name reaches moto).

`with AlteringProxy(moto_url) as url:` runs it on 127.0.0.1 and a free port and stops it after.
"""

from __future__ import annotations

import http.client
import ssl
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from server_process import ServerContext, ThreadedServer

HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "expect", "proxy-connection"}
CHECKSUM_HEADERS = ("content-md5", "x-amz-checksum-", "x-amz-sdk-checksum-", "x-amz-content-sha256", "x-amz-trailer", "x-amz-decoded-content-length")


@dataclass(frozen=True)
class Seen:
    """One request as it reached the proxy (header names in lower case), and the store's answer."""

    method: str
    target: str  # a path, or a whole URL when the client took the proxy for its HTTP proxy
    headers: dict[str, str]
    status: int
    answer: bytes


class AlteringProxy(ServerContext[str]):
    def __init__(
        self,
        upstream: str,
        *,
        match: str | None = "/dataai/",
        junk: bytes = b"0\r\n" * 189 + b"\r\n",
        drop_conditions: bool = False,
        fail_part: int | None = None,
        fail_after: float = 0.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.upstream = urlsplit(upstream)
        self.match = match
        self.tls = tls
        self.seen: list[Seen] = []
        self.junk = junk  # 569 bytes, like the framing a real store kept
        self.drop_conditions = drop_conditions  # a store that ignores If-Match / If-None-Match
        self.fail_part = fail_part
        self.fail_after = fail_after  # seconds before that part's error answer
        self.altered = 0
        self._server: ThreadedServer | None = None

    def start(self) -> str:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self) -> None:
                body = self._body()
                if proxy.fail_part is not None and f"partNumber={proxy.fail_part}&" in self.path + "&":
                    time.sleep(proxy.fail_after)
                    error = b"<Error><Code>InternalError</Code><Message>boom</Message></Error>"
                    self.send_response(500)
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return
                target = urlsplit(self.path)
                path = f"{target.path}?{target.query}" if target.query else target.path
                alter = self.command == "PUT" and proxy.match is not None and proxy.match in path and "x-amz-copy-source" not in self.headers
                drop = HOP_BY_HOP | ({"if-match", "if-none-match"} if proxy.drop_conditions else set())
                headers = {k: v for k, v in self.headers.items() if k.lower() not in drop}
                if alter:
                    body += proxy.junk
                    headers = {k: v for k, v in headers.items() if not k.lower().startswith(CHECKSUM_HEADERS)}
                    proxy.altered += 1
                headers["Content-Length"] = str(len(body))
                connection = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                try:
                    connection.request(self.command, path, body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                    proxy.seen.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, response.status, data))
                    self.send_response(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() not in HOP_BY_HOP:
                            self.send_header(key, value)
                    length = response.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                    self.send_header("Content-Length", length or "0")
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    connection.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self._server = ThreadedServer(Handler, self.tls)
        return self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
