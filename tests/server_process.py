"""What the test servers (moto, SeaweedFS, PostgreSQL, the small HTTP servers written in tests)
share: a context that starts and stops them, the end of a server process that must not outlive its
test, and a loopback HTTP server on a thread of the test process."""

from __future__ import annotations

import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")


def end_process(process: subprocess.Popen[bytes], grace: float) -> None:
    """Ask `process` to stop, then kill it after `grace` seconds; reaped either way."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until_ready(process: subprocess.Popen[bytes], timeout: float, ready: Callable[[], bool], interval: float) -> bool:
    """Poll `ready()` (an `OSError` counts as not yet) until it holds, the process exits, or
    `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if ready():
                return True
        except OSError:
            pass
        time.sleep(interval)
    return False


class ServerContext(Generic[T]):
    """`with Server() as handle:` starts the server (handle: what `start` gives) and stops it."""

    def start(self) -> T:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> T:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class ThreadedServer(ServerContext[str]):
    """An HTTP server on 127.0.0.1 and a free port, served by threads of this process (HTTPS with
    `tls`); `start` gives its base URL."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
