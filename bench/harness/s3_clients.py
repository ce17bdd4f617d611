"""S3 clients side by side on uploads: client CPU per GB and per object, import cost, peak RSS.

Every (client, workload) runs in a fresh child process started through reaper.py, as the bench
starts its contenders (`measure.run_measured`): its import cost, CPU and peak RSS are its own,
with no floor inherited from this process. The child first makes its data, untimed: 64 MiB of
random bytes from a fixed seed, from which every object is cut. Each piece a client gets is a
fresh `bytes` copy, as a socket read gives one (so a client that keeps references instead of
copying holds what it would hold in apilake; the copy costs every client the same, ~0.1 s/GB).
It notes its CPU and peak RSS, imports and sets up the client (timed: *import +
setup*), then runs one workload (timed: the client's CPU and wall time):

- large: 8 × 64 MiB objects, 8 uploads at once, multipart in 8 MiB parts, 2 parts in flight per
  upload where the client lets one choose; each body is fed to the client in 1 MiB chunks;
- small: 500 × 200 KiB objects, one PUT each, 8 at a time.

Outside the timed part, the parent checks every object (sha256 of a GET, so size and bytes;
nothing else under the prefix; no multipart upload left open; `verify.verify_s3`) and removes
them. The servers (moto, SeaweedFS) run in their own processes; their CPU is not counted.

Clients (`CLIENTS`):

- boto3 as apilake uses it today (destinations/s3.py): create_multipart_upload / upload_part with
  CRC32 checksums on a thread pool, parts joined from the chunks; put_object with ChecksumSHA256
  and the sha256 in the metadata;
- obstore (Rust `object_store`): `put_async` with an async iterator of the chunks
  (`chunk_size` 8 MiB, `max_concurrency` 2), bodies with `use_multipart=False`; by default,
  with `checksum_algorithm: sha256`, and with `unsigned_payload` + sha256;
- awscrt's S3 client (aws-c-s3): one PUT_OBJECT meta request per object, its body a stream that
  hands over one 1 MiB chunk per read, part size 8 MiB, 2 connections per upload, checksums sent
  as trailers (CRC32 on parts, SHA256 on single PUTs), throughput target 1 Gbps;
- aiobotocore: the boto3 calls, awaited on the event loop (aiohttp underneath).

    python -m harness.s3_clients CLIENT WORKLOAD ENDPOINT BUCKET PREFIX   # the child
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.util
import io
import json
import os
import random
import resource
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, Protocol

MiB = 1 << 20
KiB = 1 << 10
SEED = 23
BASE_SIZE = 64 * MiB  # the random bytes every object is cut from
CHUNK = 1 * MiB  # what a client is fed at a time (what apilake reads from the socket)
PART = 8 * MiB
PARTS_IN_FLIGHT = 2
REGION = "us-east-1"


@dataclass(frozen=True)
class Workload:
    name: str
    objects: int
    size: int
    parallel: int = 8

    @property
    def multipart(self) -> bool:
        return self.size > PART

    @property
    def total_bytes(self) -> int:
        return self.objects * self.size

    def chunks(self, base: memoryview, i: int) -> Iterator[bytes]:
        """Object `i`, multipart: the base rotated by 5·i MiB, in 1 MiB chunks (every object differs)."""
        slots = BASE_SIZE // CHUNK
        for j in range(self.size // CHUNK):
            start = (5 * i + j) % slots * CHUNK
            yield bytes(base[start : start + CHUNK])

    def body(self, base: memoryview, i: int) -> bytes:
        """Object `i`, one PUT: a window of the base (distinct offsets, so every object differs)."""
        start = i * self.size % (BASE_SIZE - self.size)
        return bytes(base[start : start + self.size])

    def key(self, prefix: str, i: int) -> str:
        return f"{prefix}/{self.name}-{i:04d}"


WORKLOADS = {w.name: w for w in (Workload("large", 8, 64 * MiB), Workload("small", 500, 200 * KiB))}


@cache
def base_data() -> memoryview:
    """Made 1 MiB at a time, so making it never holds more than the data itself."""
    rng = random.Random(SEED)
    data = bytearray(BASE_SIZE)
    for start in range(0, BASE_SIZE, CHUNK):
        data[start : start + CHUNK] = rng.randbytes(CHUNK)
    return memoryview(data).toreadonly()


def expected_digests(workload: Workload) -> Counter[str]:
    """sha256 of every object the workload uploads (the parent's check, untimed)."""
    base = base_data()
    digests: Counter[str] = Counter()
    for i in range(workload.objects):
        h = hashlib.sha256()
        for piece in workload.chunks(base, i) if workload.multipart else [workload.body(base, i)]:
            h.update(piece)
        digests[h.hexdigest()] += 1
    return digests


# -- the clients ----------------------------------------------------------------------------------


class Uploader(Protocol):
    async def multipart(self, key: str, chunks: Iterator[bytes]) -> None: ...

    async def put(self, key: str, body: bytes) -> None: ...

    async def close(self) -> None: ...


def _credentials() -> tuple[str, str]:
    return os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]


def _parts(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """8 MiB parts joined from the chunks: one copy each, as apilake fills its part buffers."""
    pending: list[bytes] = []
    filled = 0
    for chunk in chunks:
        pending.append(chunk)
        filled += len(chunk)
        if filled >= PART:
            yield b"".join(pending)
            pending, filled = [], 0
    if pending:
        yield b"".join(pending)


async def _upload_parts(chunks: Iterator[bytes], send: Callable[[int, bytes], Awaitable[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Send every part with `send(number, data)`, at most PARTS_IN_FLIGHT at once; the parts' answers in order."""
    in_flight: set[asyncio.Future[dict[str, Any]]] = set()
    done: list[dict[str, Any]] = []
    for number, data in enumerate(_parts(chunks), 1):
        while len(in_flight) >= PARTS_IN_FLIGHT:
            finished, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            done += [f.result() for f in finished]
        in_flight.add(asyncio.ensure_future(send(number, data)))
        del data
    done += await asyncio.gather(*in_flight)
    return sorted(done, key=lambda p: p["PartNumber"])


def _put_checksum(body: bytes) -> dict[str, Any]:
    """apilake's single PUT: the sha256 as the store's checksum and in the metadata."""
    digest = hashlib.sha256(body).digest()
    return {"Metadata": {"sha256": digest.hex()}, "ChecksumSHA256": base64.b64encode(digest).decode()}


class Boto3:
    """boto3 as destinations/s3.py uses it: blocking calls on a thread pool of 32, CRC32 part checksums."""

    def __init__(self, endpoint: str, bucket: str) -> None:
        import concurrent.futures

        import boto3
        from botocore.config import Config

        config = Config(retries={"mode": "standard"}, max_pool_connections=32, connect_timeout=10, s3={"addressing_style": "path"})
        self.client = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=REGION, config=config)
        self.bucket = bucket
        self.pool = concurrent.futures.ThreadPoolExecutor(32)

    async def _call(self, method: str, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, partial(getattr(self.client, method), Bucket=self.bucket, **kwargs))

    async def multipart(self, key: str, chunks: Iterator[bytes]) -> None:
        upload_id = (await self._call("create_multipart_upload", Key=key, ChecksumAlgorithm="CRC32"))["UploadId"]

        async def send(number: int, data: bytes) -> dict[str, Any]:
            sent = await self._call(
                "upload_part", Key=key, UploadId=upload_id, PartNumber=number, Body=data, ContentLength=len(data), ChecksumAlgorithm="CRC32"
            )
            return {"PartNumber": number, "ETag": sent["ETag"], "ChecksumCRC32": sent["ChecksumCRC32"]}

        parts = await _upload_parts(chunks, send)
        await self._call("complete_multipart_upload", Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})

    async def put(self, key: str, body: bytes) -> None:
        await self._call("put_object", Key=key, Body=body, ContentLength=len(body), **_put_checksum(body))

    async def close(self) -> None:
        self.pool.shutdown()
        self.client.close()


class Aiobotocore:
    """The same calls through aiobotocore: awaited on the event loop, no threads."""

    client: Any

    def __init__(self, endpoint: str, bucket: str) -> None:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        config = AioConfig(retries={"mode": "standard"}, max_pool_connections=32, connect_timeout=10, s3={"addressing_style": "path"})
        self._context = get_session().create_client("s3", endpoint_url=endpoint, region_name=REGION, config=config)
        self.bucket = bucket

    async def start(self) -> None:
        self.client = await self._context.__aenter__()

    async def multipart(self, key: str, chunks: Iterator[bytes]) -> None:
        c, b = self.client, self.bucket
        upload_id = (await c.create_multipart_upload(Bucket=b, Key=key, ChecksumAlgorithm="CRC32"))["UploadId"]

        async def send(number: int, data: bytes) -> dict[str, Any]:
            sent = await c.upload_part(Bucket=b, Key=key, UploadId=upload_id, PartNumber=number, Body=data, ContentLength=len(data), ChecksumAlgorithm="CRC32")
            return {"PartNumber": number, "ETag": sent["ETag"], "ChecksumCRC32": sent["ChecksumCRC32"]}

        parts = await _upload_parts(chunks, send)
        await c.complete_multipart_upload(Bucket=b, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})

    async def put(self, key: str, body: bytes) -> None:
        await self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentLength=len(body), **_put_checksum(body))

    async def close(self) -> None:
        await self._context.__aexit__(None, None, None)


class Obstore:
    """obstore's S3Store: `put_async` streams an async iterator of chunks as a multipart upload."""

    def __init__(self, endpoint: str, bucket: str, **config: Any) -> None:
        import obstore
        from obstore.store import S3Store

        key_id, secret = _credentials()
        self.put_async = obstore.put_async
        self.store = S3Store(
            bucket, endpoint=endpoint, region=REGION, access_key_id=key_id, secret_access_key=secret,
            virtual_hosted_style_request=False, client_options={"allow_http": True}, **config,
        )  # fmt: skip

    async def multipart(self, key: str, chunks: Iterator[bytes]) -> None:
        async def feed() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        await self.put_async(self.store, key, feed(), use_multipart=True, chunk_size=PART, max_concurrency=PARTS_IN_FLIGHT)

    async def put(self, key: str, body: bytes) -> None:
        await self.put_async(self.store, key, body, use_multipart=False)

    async def close(self) -> None:
        pass


class _ChunkStream(io.RawIOBase):
    """A request body for awscrt: each read hands over (the rest of) one chunk."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._left = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left.nbytes:
            next_chunk = next(self._chunks, None)
            if next_chunk is None:
                return 0
            self._left = memoryview(next_chunk)
        n = min(len(buffer), self._left.nbytes)
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


class Awscrt:
    """awscrt's S3 client (aws-c-s3): the CRT splits a PUT_OBJECT into parts and sends them from its
    own threads, reading the body stream in Python as it goes."""

    def __init__(self, endpoint: str, bucket: str) -> None:
        from urllib.parse import urlsplit

        from awscrt import auth, http, s3

        key_id, secret = _credentials()
        credentials = auth.AwsCredentialsProvider.new_static(key_id, secret)
        self._http, self._s3 = http, s3
        self.host = urlsplit(endpoint).netloc
        self.bucket = bucket
        self.client = s3.S3Client(
            region=REGION, signing_config=s3.create_default_s3_signing_config(region=REGION, credential_provider=credentials),
            tls_mode=s3.S3RequestTlsMode.DISABLED, part_size=PART, multipart_upload_threshold=PART,
            # Its default target (10 Gbps) sizes a buffer pool that held 360 MB here; 1 Gbps is what
            # this machine can move, and bounds its buffers near the other clients' (same CPU).
            throughput_target_gbps=1.0,
        )  # fmt: skip

    async def _put(self, key: str, size: int, chunks: Iterator[bytes], algorithm: Any, connections: int | None) -> None:
        s3 = self._s3
        headers = self._http.HttpHeaders([("Host", self.host), ("Content-Length", str(size)), ("Content-Type", "application/octet-stream")])
        request = self._http.HttpRequest("PUT", f"/{self.bucket}/{key}", headers, _ChunkStream(chunks))
        checksum = s3.S3ChecksumConfig(algorithm=algorithm, location=s3.S3ChecksumLocation.TRAILER)
        made = self.client.make_request(
            type=s3.S3RequestType.PUT_OBJECT, request=request, checksum_config=checksum, max_active_connections_override=connections
        )
        await asyncio.wrap_future(made.finished_future)

    async def multipart(self, key: str, chunks: Iterator[bytes]) -> None:
        size = WORKLOADS["large"].size
        await self._put(key, size, chunks, self._s3.S3ChecksumAlgorithm.CRC32, PARTS_IN_FLIGHT)

    async def put(self, key: str, body: bytes) -> None:
        await self._put(key, len(body), iter([body]), self._s3.S3ChecksumAlgorithm.SHA256, None)

    async def close(self) -> None:
        pass


CLIENTS: dict[str, Callable[[str, str], Uploader]] = {
    "boto3 (apilake today)": Boto3,
    "obstore": Obstore,
    "obstore, checksum sha256": partial(Obstore, checksum_algorithm="sha256"),
    "obstore, unsigned payload + checksum sha256": partial(Obstore, unsigned_payload=True, checksum_algorithm="sha256"),
    "awscrt S3 client": Awscrt,
    "aiobotocore": Aiobotocore,
}


# -- the child ------------------------------------------------------------------------------------


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_rss_bytes() -> int:
    """This process's own peak RSS so far (VmHWM: reset at exec, unlike ru_maxrss)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


async def _child(client: str, workload: Workload, endpoint: str, bucket: str, prefix: str) -> dict[str, float]:
    base = base_data()
    before = {"cpu": _cpu(), "rss": _peak_rss_bytes()}
    uploader = CLIENTS[client](endpoint, bucket)
    if isinstance(uploader, Aiobotocore):
        await uploader.start()
    setup_cpu = _cpu() - before["cpu"]
    gate = asyncio.Semaphore(workload.parallel)

    async def one(i: int) -> None:
        async with gate:
            key = workload.key(prefix, i)
            if workload.multipart:
                await uploader.multipart(key, workload.chunks(base, i))
            else:
                await uploader.put(key, workload.body(base, i))

    cpu, wall = _cpu(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(workload.objects)))
    work = {"work_cpu_s": _cpu() - cpu, "work_wall_s": time.perf_counter() - wall}
    await uploader.close()
    return {"setup_cpu_s": setup_cpu, **work, "base_rss_bytes": before["rss"]}


def main() -> None:
    client, workload, endpoint, bucket, prefix = sys.argv[1:]
    print(json.dumps(asyncio.run(_child(client, WORKLOADS[workload], endpoint, bucket, prefix))))


# -- the parent -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    client: str
    workload: str
    setup_cpu_s: float  # import + setup
    work_cpu_s: float
    work_wall_s: float
    peak_rss_bytes: int  # the whole child, from wait4
    base_rss_bytes: int  # the child before the client was imported: interpreter + data

    def best(self, other: Result) -> Result:
        """Each figure at its best of the two runs."""
        return Result(
            self.client, self.workload, min(self.setup_cpu_s, other.setup_cpu_s), min(self.work_cpu_s, other.work_cpu_s),
            min(self.work_wall_s, other.work_wall_s), min(self.peak_rss_bytes, other.peak_rss_bytes),
            min(self.base_rss_bytes, other.base_rss_bytes),
        )  # fmt: skip


def measure(server: str, clients: list[str], rounds: int, log: Callable[[str], None]) -> tuple[dict[tuple[str, str], Result], list[str]]:
    """Best of `rounds` for each client and workload, uploading into a fresh `server` ("moto" or
    "seaweedfs"); clients alternate within a round. A run that fails, or whose objects fail
    their check, raises. A child that finished its uploads and then died on its way out (its
    figures printed, its objects all there) still counts, and is noted."""
    from .measure import run_measured
    from .servers import BENCH_DIR, MotoProcess, SeaweedFSProcess, bench_env, s3_client
    from .verify import clear_s3, verify_s3

    bucket = "micro"
    clients = [c for c in clients if _installed(c, log)]
    expected = {name: expected_digests(w) for name, w in WORKLOADS.items()}
    best: dict[tuple[str, str], Result] = {}
    notes: list[str] = []
    with MotoProcess() if server == "moto" else SeaweedFSProcess() as s3:
        admin = s3_client(s3.endpoint_url)
        admin.create_bucket(Bucket=bucket)
        env = bench_env({"PYTHONPATH": str(BENCH_DIR)})
        for round_ in range(1, rounds + 1):
            for client in clients:
                for name in WORKLOADS:
                    prefix = f"{round_}-{_slug(client)}"
                    argv = [sys.executable, "-m", "harness.s3_clients", client, name, s3.endpoint_url, bucket, prefix]
                    m = run_measured(argv, env=env, cwd=BENCH_DIR, timeout=600)
                    failed = f"{client}, {name} into {server}, round {round_}"
                    try:
                        doc = json.loads(m.output.strip().splitlines()[-1])
                    except (ValueError, IndexError):
                        raise RuntimeError(f"{failed}: exit code {m.exit_code}: {m.output.strip()[-1500:]}") from None
                    verdict = verify_s3(admin, f"s3://{bucket}/{prefix}", expected[name])
                    clear_s3(admin, f"s3://{bucket}/{prefix}")
                    if not verdict.ok:
                        raise RuntimeError(f"{failed}: {'; '.join(verdict.problems)}")
                    if m.exit_code != 0:
                        notes.append(f"{failed}: exit code {m.exit_code} after its uploads had finished and checked out")
                        log(f"   NOTE {notes[-1]}")
                    r = Result(client, name, doc["setup_cpu_s"], doc["work_cpu_s"], doc["work_wall_s"], m.peak_rss_bytes, doc["base_rss_bytes"])
                    log(f"   {server} round {round_} {name:<5} {r.work_cpu_s:6.2f} s CPU {r.work_wall_s:6.2f} s wall "
                        f"{r.peak_rss_bytes / 1e6:5.0f} MB peak  {client}")  # fmt: skip
                    best[client, name] = r.best(best[client, name]) if (client, name) in best else r
    return best, notes


def _installed(client: str, log: Callable[[str], None]) -> bool:
    module = client.split()[0].rstrip(",")  # every client's name starts with its package's
    if importlib.util.find_spec(module) is None:
        log(f"(skipped {client}: pip install {module})")
        return False
    return True


def _slug(client: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in client.lower()).strip("-")


def render(results: dict[tuple[str, str], Result], clients: list[str]) -> list[str]:
    """One Markdown table: a row per client."""
    large, small = WORKLOADS["large"], WORKLOADS["small"]
    lines = [
        "| client | large: MB/s | large: CPU s/GB | small: objects/s | small: CPU ms/object | import + setup CPU s | "
        "peak RSS MB, large (client's share) | peak RSS MB, small (client's share) |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for client in clients:
        lg, sm = results.get((client, "large")), results.get((client, "small"))
        if lg is None or sm is None:
            continue
        lines.append(
            f"| {client} | {large.total_bytes / 1e6 / lg.work_wall_s:,.0f} | {lg.work_cpu_s / (large.total_bytes / 1e9):.2f} | "
            f"{small.objects / sm.work_wall_s:,.0f} | {sm.work_cpu_s / small.objects * 1000:.2f} | {min(lg.setup_cpu_s, sm.setup_cpu_s):.2f} | "
            f"{lg.peak_rss_bytes / 1e6:.0f} ({(lg.peak_rss_bytes - lg.base_rss_bytes) / 1e6:.0f}) | "
            f"{sm.peak_rss_bytes / 1e6:.0f} ({(sm.peak_rss_bytes - sm.base_rss_bytes) / 1e6:.0f}) |"
        )  # fmt: skip
    return lines


if __name__ == "__main__":
    main()
