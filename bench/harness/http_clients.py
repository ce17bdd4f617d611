"""HTTP clients side by side on reading bodies: client CPU per GB and per request.

A sendfile server in a child process serves one file from disk (so server CPU is nearly nil and
never counted); each client runs in this process, and only this process's CPU (user + system,
`getrusage`) is measured. Cases:

- httpx `aiter_raw` (what apilake uses for JSON), concurrent tasks on one event loop;
- aiohttp `iter_chunked(1 MiB)`, concurrent tasks on one event loop;
- pycurl as apilake reads file bodies (`apilake.fetch.download`): libcurl's multi interface on
  the event loop (pycurl's AsyncCurlMulti), 512 KiB buffer, length and crc32c checked inline;
- pycurl, one blocking transfer per body in a worker thread (the design apilake tried first);
- pycurl multi (one thread, libcurl's own event loop), 512 KiB buffer: the floor of Python + libcurl.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import resource
import socketserver
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    path_on_disk = ""

    def do_GET(self) -> None:
        size = os.path.getsize(self.path_on_disk)
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        with open(self.path_on_disk, "rb") as f:
            offset = 0
            while offset < size:
                offset += os.sendfile(self.wfile.fileno(), f.fileno(), offset, size - offset)

    def log_message(self, *args: object) -> None:
        pass


def serve(path: str) -> None:
    """Child process: serve `path` for any GET on a free loopback port; prints the port."""
    _Handler.path_on_disk = path

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    with Server(("127.0.0.1", 0), _Handler) as server:
        print(server.server_address[1], flush=True)
        server.serve_forever()


@dataclass
class Result:
    client: str
    cpu_s: float
    wall_s: float
    bytes: int
    requests: int


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _httpx(url: str, n: int, parallel: int) -> int:
    import httpx

    total = 0
    gate = asyncio.Semaphore(parallel)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=parallel)) as client:

        async def one() -> None:
            nonlocal total
            async with gate, client.stream("GET", url) as r:
                async for c in r.aiter_raw():
                    total += len(c)

        await asyncio.gather(*(one() for _ in range(n)))
    return total


async def _aiohttp(url: str, n: int, parallel: int) -> int:
    import aiohttp

    total = 0
    gate = asyncio.Semaphore(parallel)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=parallel), auto_decompress=False) as s:

        async def one() -> None:
            nonlocal total
            async with gate, s.get(url) as r:
                async for c in r.content.iter_chunked(1 << 20):
                    total += len(c)

        await asyncio.gather(*(one() for _ in range(n)))
    return total


async def _apilake_download(url: str, n: int, parallel: int) -> int:
    from apilake.fetch.download import Download, Timeouts, Transport
    from apilake.integrity import StreamCheck

    total = 0
    gate = asyncio.Semaphore(parallel)
    transport = Transport("bench", Timeouts(10, 60), parallel)

    async def one() -> None:
        nonlocal total
        async with gate:
            d = Download(transport, url, lambda length: StreamCheck(expected_length=length, gzip=False, checksum="crc32c"))
            d.start({})
            await d.started()
            async for batch in d.batches():
                total += sum(map(len, batch))
            await d.aclose()

    await asyncio.gather(*(one() for _ in range(n)))
    await transport.close()
    return total


def _pycurl_multi(url: str, n: int, parallel: int) -> int:
    import pycurl

    total = 0

    def write(chunk: bytes) -> None:
        nonlocal total
        total += len(chunk)

    multi = pycurl.CurlMulti()
    free = []
    for _ in range(parallel):
        c = pycurl.Curl()
        c.setopt(pycurl.BUFFERSIZE, 512 << 10)
        c.setopt(pycurl.WRITEFUNCTION, write)
        c.setopt(pycurl.URL, url)
        free.append(c)
    queued, running = n, 0
    while queued or running:
        while queued and free:
            multi.add_handle(free.pop())
            queued -= 1
            running += 1
        multi.select(1.0)
        while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        _, done, failed = multi.info_read()
        for c in done + [f[0] for f in failed]:
            multi.remove_handle(c)
            free.append(c)
            running -= 1
    return total


def _pycurl_threads(url: str, n: int, parallel: int) -> int:
    import concurrent.futures

    import pycurl

    def one(_: int) -> int:
        got = 0

        def write(chunk: bytes) -> None:
            nonlocal got
            got += len(chunk)

        c = pycurl.Curl()
        c.setopt(pycurl.BUFFERSIZE, 512 << 10)
        c.setopt(pycurl.URL, url)
        c.setopt(pycurl.WRITEFUNCTION, write)
        c.perform()
        c.close()
        return got

    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        return sum(pool.map(one, range(n)))


CLIENTS: dict[str, Callable[[str, int, int], Awaitable[int] | int]] = {
    "httpx aiter_raw": _httpx,
    "aiohttp iter_chunked(1 MiB)": _aiohttp,
    "pycurl multi on the event loop, checked (apilake)": _apilake_download,
    "pycurl, one blocking transfer per thread": _pycurl_threads,
    "pycurl multi, one thread": _pycurl_multi,
}


def measure(size: int, n: int, parallel: int, repeat: int) -> list[Result]:
    """Best-of-`repeat` client CPU for `n` GETs of a `size`-byte body, `parallel` at a time."""
    with tempfile.NamedTemporaryFile(suffix=".bin") as body:
        body.write(os.urandom(min(size, 1 << 20)) * max(1, size >> 20) if size >= 1 << 20 else os.urandom(size))
        body.flush()
        server = subprocess.Popen(
            [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent.parent)!r}); "
             f"from harness.http_clients import serve; serve({body.name!r})"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert server.stdout is not None
            url = f"http://127.0.0.1:{server.stdout.readline().strip()}/file"
            results = []
            for name, client in CLIENTS.items():
                best: Result | None = None
                for _ in range(repeat):
                    cpu, wall = _cpu(), time.monotonic()
                    try:
                        got = client(url, n, parallel)
                        if asyncio.iscoroutine(got):
                            got = asyncio.run(got)
                    except ImportError as exc:  # aiohttp comes with the bench extra only
                        print(f"(skipped {name}: {exc}; pip install -e '.[bench]')")
                        break
                    r = Result(name, _cpu() - cpu, time.monotonic() - wall, int(got), n)  # type: ignore[arg-type]
                    if best is None or r.cpu_s < best.cpu_s:
                        best = r
                if best is None:
                    continue
                assert best.bytes == n * os.path.getsize(body.name), f"{name} read {best and best.bytes} bytes"
                results.append(best)
            return results
        finally:
            server.terminate()
            server.wait()
