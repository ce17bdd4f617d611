"""Micro-benchmarks of apilake's per-byte work on the emulator's files: what a GB costs.

    .venv/bin/python bench/micro.py [--size-mib 64] [--repeat 3] [--http-only]
    .venv/bin/python bench/micro.py --s3 [--s3-server moto] [--s3-client obstore] [--repeat 2]

Measured on one in-memory emulator file (multi-member gzip, ~40 KiB members, the bulk
scenarios' content): sha256; the gzip check as `apilake.integrity.StreamCheck` does it today;
alternative inflate loops (stdlib zlib with bounded input slices, python-isal's `isal_zlib`);
and unbuffered 1 MiB writes to a file. CPU seconds per GB of *compressed* input, best of
`--repeat`. isal is a dependency of apilake itself.

Then HTTP clients side by side (`harness/http_clients.py`): client CPU per GB reading 8 × 64 MiB
bodies 8 at a time, and per request reading 500 × 200 KiB bodies 8 at a time, from a sendfile
server in another process. These numbers chose libcurl for file bodies.

`--s3`: S3 clients side by side on uploads (`harness/s3_clients.py`), each in a fresh child
process: client CPU per GB (8 × 64 MiB multipart, 8 at once) and per object (500 × 200 KiB PUTs,
8 at a time), import + setup CPU, peak RSS and throughput, into moto and into SeaweedFS, every
object checked byte-exact afterwards; best of `--repeat` (2). Prints Markdown tables
(bench/results/s3_clients.md keeps the latest with a reading).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
import zlib
from collections.abc import Callable
from types import ModuleType

from apilake.emulator import file_bytes, gunzip_members
from apilake.integrity import Checksum, StreamCheck

GZIP_WBITS = 31
CHUNK = 1 << 20  # what apilake reads from the socket (fetch/bulk.py CHUNK)


def chunks(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def sha256_only(parts: list[bytes]) -> None:
    h = hashlib.sha256()
    for c in parts:
        h.update(c)


def checksum(algorithm: str) -> Callable[[list[bytes]], None]:
    def run(parts: list[bytes]) -> None:
        c = Checksum(algorithm)
        for part in parts:
            c.update(part)

    return run


def stream_check(verify: str, algorithm: str) -> Callable[[list[bytes]], None]:
    """apilake's StreamCheck as a file transfer runs it (`verify:`, `checksum:`)."""

    def run(parts: list[bytes]) -> None:
        check = StreamCheck(expected_length=None, gzip=verify == "gzip", checksum=algorithm)
        for c in parts:
            check.update(c)
        check.finish()

    return run


def inflate_sliced(lib: ModuleType, piece: int) -> Callable[[list[bytes]], None]:
    """Inflate every member, feeding at most `piece` input bytes per call (memoryview slices):
    outputs stay small (cache-resident, no big allocations), unused_data copies stay short."""

    def run(parts: list[bytes]) -> None:
        d = lib.decompressobj(GZIP_WBITS)
        for c in parts:
            view = memoryview(c)
            for i in range(0, len(view), piece):
                data: bytes | memoryview = view[i : i + piece]
                while data:
                    if d.eof:
                        d = lib.decompressobj(GZIP_WBITS)
                    d.decompress(data)
                    data = d.unused_data
        assert d.eof

    return run


def inflate_today_loop(lib: ModuleType) -> Callable[[list[bytes]], None]:
    """StreamCheck._feed's loop (max_length 1 MiB, whole 1 MiB chunks) with another zlib."""

    def run(parts: list[bytes]) -> None:
        d = lib.decompressobj(GZIP_WBITS)
        for c in parts:
            data = c
            while data:
                if d.eof:
                    d = lib.decompressobj(GZIP_WBITS)
                d.decompress(data, CHUNK)
                data = d.unconsumed_tail or d.unused_data
        assert d.eof

    return run


def write_unbuffered(parts: list[bytes]) -> None:
    with tempfile.NamedTemporaryFile(dir=os.environ.get("BENCH_DISK", None)) as tmp, open(tmp.name, "wb", buffering=0) as f:
        for c in parts:
            f.write(c)


def measure(fn: Callable[[list[bytes]], None], parts: list[bytes], repeat: int) -> float:
    """Best CPU seconds of `repeat` runs."""
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn(parts)
        best = min(best, time.process_time() - t)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, default=64)
    p.add_argument("--repeat", type=int, help="best of this many runs (default 3; 2 with --s3)")
    p.add_argument("--http-only", action="store_true", help="only the HTTP client comparison")
    p.add_argument("--s3", action="store_true", help="only the S3 client comparison")
    p.add_argument("--s3-server", action="append", choices=["moto", "seaweedfs"], help="with --s3: only this server (repeatable)")
    p.add_argument("--s3-client", action="append", metavar="NAME", help="with --s3: only clients whose name contains NAME (repeatable)")
    a = p.parse_args()
    if a.s3:
        s3_clients(a.s3_server or ["moto", "seaweedfs"], a.s3_client, a.repeat or 2)
        return
    repeat = a.repeat or 3
    if not a.http_only:
        per_byte(a.size_mib, repeat)
    http_clients(repeat)


def s3_clients(servers: list[str], only: list[str] | None, rounds: int) -> None:
    import datetime as dt
    import shlex
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from harness import s3_clients as s3

    clients = [c for c in s3.CLIENTS if not only or any(o.lower() in c.lower() for o in only)]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    command = shlex.join(["bench/micro.py", *sys.argv[1:]])
    out = [f"- **Date:** {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}; load average at start (1, 5, 15 min): {load}",
           f"- **Run:** `{command}`: best of {rounds} rounds, clients alternating"]  # fmt: skip
    for server in servers:
        results, notes = s3.measure(server, clients, rounds, lambda line: print(line, file=sys.stderr, flush=True))
        out += ["", f"### into {server}", "", *s3.render(results, clients), *(["", *(f"- {n}" for n in notes)] if notes else [])]
    out.append(f"\n- **Load average at end:** {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\n".join(out))


def http_clients(repeat: int) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from harness.http_clients import measure as measure_http

    print(f"\nHTTP clients, client CPU only (best of {repeat}); 8 requests in flight")
    large = {r.client: r for r in measure_http(64 << 20, 8, 8, repeat)}
    small = {r.client: r for r in measure_http(200 << 10, 500, 8, repeat)}
    print(f"{'CPU s/GB':>9}  {'CPU ms/req':>10}  client")
    for name, r in large.items():
        if name not in small:
            continue
        s = small[name]
        print(f"{r.cpu_s / (r.bytes / 1e9):9.2f}  {s.cpu_s / s.requests * 1000:10.2f}  {name}")


def per_byte(size_mib: int, repeat: int) -> None:
    name = "metrics/bench/all/all/daily/2026-11-25/data.1.20261125.1.csv.gz"
    data = file_bytes(name, size_mib << 20)
    inflated = len(gunzip_members(data))
    parts = chunks(data)
    gb = len(data) / 1e9
    print(f"{len(data) / 1e6:.1f} MB compressed, {inflated / 1e6:.0f} MB inflated (×{inflated / len(data):.1f}), {len(parts)} chunks of 1 MiB\n")
    cases: list[tuple[str, Callable[[list[bytes]], None]]] = [
        ("sha256", sha256_only),
        *((f"checksum {alg} (apilake.integrity.Checksum)", checksum(alg)) for alg in ("crc32c", "sha256")),
        ("StreamCheck, verify: length, checksum: crc32c", stream_check("length", "crc32c")),
        ("StreamCheck, verify: gzip, checksum: crc32c (the default)", stream_check("gzip", "crc32c")),
        ("StreamCheck, verify: gzip, checksum: sha256", stream_check("gzip", "sha256")),
        ("zlib, today's loop", inflate_today_loop(zlib)),
        ("zlib, 64 KiB input slices", inflate_sliced(zlib, 64 << 10)),
        ("zlib, 16 KiB input slices", inflate_sliced(zlib, 16 << 10)),
    ]
    try:
        from isal import isal_zlib

        cases += [
            ("isal_zlib, today's loop", inflate_today_loop(isal_zlib)),
            ("isal_zlib, 64 KiB input slices", inflate_sliced(isal_zlib, 64 << 10)),
            ("isal_zlib, 16 KiB input slices", inflate_sliced(isal_zlib, 16 << 10)),
        ]
    except ImportError:
        print("(python-isal not installed: `pip install isal` to compare it)\n")
    cases.append(("write, unbuffered 1 MiB chunks (page cache)", write_unbuffered))
    print(f"{'CPU s/GB':>9}  {'MB/s':>7}  case")
    for label, fn in cases:
        seconds = measure(fn, parts, repeat)
        print(f"{seconds / gb:9.2f}  {len(data) / 1e6 / seconds:7.0f}  {label}")


if __name__ == "__main__":
    main()
