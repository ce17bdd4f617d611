"""S3Destination against a real S3 protocol server (moto, loopback only)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import random
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from apilake.destinations import ObjectInfo, open_destination
from apilake.destinations.s3 import MAX_PART, MAX_PARTS, MIB, PartBudget, S3Destination, S3Writer, part_size
from apilake.errors import DestinationError
from apilake.jobfile import S3Options
from conftest import wait_for
from moto_server import MotoServer

BUCKET = "lake"


def _options(endpoint: str, **kw: Any) -> S3Options:
    return S3Options(endpoint_url=endpoint, region="us-east-1", addressing_style="path", **kw)


@pytest.fixture
def endpoint(moto_endpoint: str) -> str:
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=BUCKET)
    return moto_endpoint


def _dest(endpoint: str, prefix: str = "landing", **kw: Any) -> S3Destination:
    return S3Destination(f"s3://{BUCKET}/{prefix}", _options(endpoint, **kw))


def _chunks(data: bytes, seed: int = 7) -> Iterator[bytes]:
    """Uneven chunk sizes, as an HTTP stream hands them over."""
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        size = rng.choice([1, 4099, 65_536, 300_001, 1 << 20, 777_777])
        yield data[pos : pos + size]
        pos += size


def _stream(dest: S3Destination, key: str, data: bytes, **kw: Any) -> None:
    async def go() -> None:
        try:
            async with dest.open_write(key, **kw) as writer:
                for chunk in _chunks(data):
                    await writer.write(chunk)
        finally:
            await dest.close()

    asyncio.run(go())


def _run(dest: S3Destination, coro_fn: Any) -> Any:
    async def go() -> Any:
        try:
            return await coro_fn()
        finally:
            await dest.close()

    return asyncio.run(go())


def test_small_object_put_stat_read_list(endpoint: str) -> None:
    dest = open_destination(f"s3://{BUCKET}/landing", _options(endpoint))
    assert isinstance(dest, S3Destination) and dest.url == f"s3://{BUCKET}/landing"
    body = b'{"rows": [1, 2, 3]}' * 100

    async def go() -> tuple[Any, ...]:
        await dest.check()
        await dest.put("api/2024/01/a.json", body)
        await dest.put("api/2024/01/empty.json", b"")
        await dest.put("other/b.json", b"b")
        info = await dest.stat("api/2024/01/a.json")
        data = await dest.read("api/2024/01/a.json")
        listed = [o async for o in dest.list("api/")]
        everything = [o async for o in dest.list()]
        missing = await dest.stat("api/nope.json")
        with pytest.raises(FileNotFoundError):
            await dest.read("other/nope.json")
        return info, data, listed, everything, missing

    info, data, listed, everything, missing = _run(dest, go)
    assert info == ObjectInfo("api/2024/01/a.json", len(body), hashlib.sha256(body).hexdigest())
    assert data == body
    assert listed == [ObjectInfo("api/2024/01/a.json", len(body)), ObjectInfo("api/2024/01/empty.json", 0)]
    assert [o.key for o in everything] == ["api/2024/01/a.json", "api/2024/01/empty.json", "other/b.json"]
    assert missing is None
    size, stream = dest.open_read("api/2024/01/a.json")  # the table builder's streaming read
    with stream:
        assert (size, stream.read()) == (len(body), body)
    assert dest.open_read("api/nope.json") is None
    # keys live under the destination prefix, with the sha256 as user metadata
    head = boto3.client("s3", endpoint_url=endpoint).head_object(Bucket=BUCKET, Key="landing/api/2024/01/a.json")
    assert head["Metadata"] == {"sha256": hashlib.sha256(body).hexdigest()}


def test_list_paginates_and_bucket_root_prefix(endpoint: str) -> None:
    dest = S3Destination(f"s3://{BUCKET}", _options(endpoint))
    client = boto3.client("s3", endpoint_url=endpoint)
    keys = [f"k/{i:04d}" for i in range(1_003)]  # S3 answers 1,000 keys a page: two pages
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=BUCKET, Key=key, Body=b"x"), [*keys, "l/00", "k0"]))

    async def go() -> tuple[list[ObjectInfo], list[ObjectInfo]]:
        return [o async for o in dest.list("k/")], [o async for o in dest.list("k/00")]

    listed, partial = _run(dest, go)
    assert [o.key for o in listed] == keys  # l/00 and k0 are beside the prefix
    assert [o.key for o in partial] == keys[:100]  # a prefix may end mid-name


def test_multipart_stream_is_byte_identical(endpoint: str) -> None:
    dest = _dest(endpoint, part_size_mb=5)
    data = os.urandom(3 * 5 * MIB + 123_457)  # three full parts and a short last one
    _stream(dest, "bulk/big.csv.gz", data)
    client = boto3.client("s3", endpoint_url=endpoint)
    got = client.get_object(Bucket=BUCKET, Key="landing/bulk/big.csv.gz")["Body"].read()
    assert got == data
    assert client.head_object(Bucket=BUCKET, Key="landing/bulk/big.csv.gz", PartNumber=1)["PartsCount"] == 4
    info = _run(dest, lambda: dest.stat("bulk/big.csv.gz"))
    assert info == ObjectInfo("bulk/big.csv.gz", len(data), None)  # multipart: the run records hold the sha256
    assert dest.open_multipart_uploads() == []


def test_stream_of_exactly_one_part_uses_multipart(endpoint: str) -> None:
    dest = _dest(endpoint, part_size_mb=5)
    data = os.urandom(5 * MIB)
    _stream(dest, "one-part.bin", data, size_hint=len(data))
    assert _run(dest, lambda: dest.read("one-part.bin")) == data


def test_exception_in_block_leaves_nothing(endpoint: str) -> None:
    dest = _dest(endpoint, part_size_mb=5)

    async def go(key: str, size: int) -> None:
        try:
            async with dest.open_write(key) as writer:
                for chunk in _chunks(os.urandom(size)):
                    await writer.write(chunk)
                raise RuntimeError("source connection dropped")
        finally:
            await dest.close()

    with pytest.raises(RuntimeError, match="dropped"):
        asyncio.run(go("multi.bin", 12 * MIB))  # two parts uploaded or uploading, then the failure
    with pytest.raises(RuntimeError, match="dropped"):
        asyncio.run(go("single.bin", 100_000))
    assert _run(dest, lambda: dest.stat("multi.bin")) is None
    assert _run(dest, lambda: dest.stat("single.bin")) is None
    assert dest.open_multipart_uploads() == []
    assert boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def _cancel_mid_write(dest: S3Destination, key: str, transfer: Any, started: threading.Event, cancelled: threading.Event | None = None) -> None:
    """Cancel `transfer` once `started` is set (then set `cancelled`): nothing of `key` may remain, no upload stay open."""

    async def go() -> None:
        task = asyncio.create_task(transfer())
        assert await asyncio.to_thread(started.wait, 60)
        task.cancel()
        if cancelled is not None:
            cancelled.set()
        try:
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await dest.close()

    asyncio.run(go())
    assert dest.open_multipart_uploads() == []
    assert _run(dest, lambda: dest.stat(key)) is None


def test_cancellation_aborts_multipart_upload(endpoint: str) -> None:
    dest = _dest(endpoint, part_size_mb=5)
    ready = threading.Event()

    async def transfer() -> None:
        async with dest.open_write("cancelled.bin") as writer:
            await writer.write(os.urandom(11 * MIB))  # parts 1 and 2 leave; they may still be in flight
            ready.set()
            await asyncio.Event().wait()  # until cancelled

    _cancel_mid_write(dest, "cancelled.bin", transfer, ready)


def test_cancellation_while_the_upload_starts_still_aborts(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = _dest(endpoint, part_size_mb=5)
    real_sweep = dest.abort_stale_uploads
    creating, cancelled = threading.Event(), threading.Event()

    def slow_sweep(full_key: str) -> None:  # runs just before the upload is created
        creating.set()
        assert cancelled.wait(60)  # the upload is created only once the transfer is cancelled
        real_sweep(full_key)

    monkeypatch.setattr(dest, "abort_stale_uploads", slow_sweep)

    async def transfer() -> None:
        async with dest.open_write("starting.bin") as writer:
            await writer.write(os.urandom(6 * MIB))

    # the upload exists only after the cancel: it must be aborted all the same
    _cancel_mid_write(dest, "starting.bin", transfer, creating, cancelled)


def test_failed_part_upload_names_the_key_and_aborts(endpoint: str) -> None:
    # A proxy in front of the store answers 500 to part 2 (every retry of it): the upload fails,
    # names the key and leaves nothing open.
    from altering_proxy import AlteringProxy

    with AlteringProxy(endpoint, match="nothing", fail_part=2) as proxied:
        dest = _dest(proxied, part_size_mb=5)
        with pytest.raises(DestinationError, match=r"part 2 of s3://lake/landing/flaky\.bin.*InternalError"):
            _stream(dest, "flaky.bin", os.urandom(16 * MIB))
    dest = _dest(endpoint)
    assert dest.open_multipart_uploads() == []
    assert _run(dest, lambda: dest.stat("flaky.bin")) is None


def test_a_part_failing_after_the_last_was_handed_over_fails_the_transfer_without_hanging(endpoint: str) -> None:
    # One part in flight, a body of exactly three parts: by the time part 1 fails, parts 2 and 3
    # wait with obstore, which then aborts and never asks for more; the end of the body must not
    # wait for it for ever, and every part's budget comes back.
    from altering_proxy import AlteringProxy

    with AlteringProxy(endpoint, match="nothing", fail_part=1, fail_after=1.0) as proxied:
        dest = _dest(proxied, part_size_mb=5, parts_in_flight=1)

        async def go() -> None:
            async def transfer() -> None:
                async with dest.open_write("late.bin") as writer:
                    for i in range(3):
                        await writer.write(bytes([i]) * (5 * MIB))

            await asyncio.wait_for(transfer(), 60)

        with pytest.raises(DestinationError, match=r"part 1 of s3://lake/landing/late\.bin.*InternalError"):
            asyncio.run(go())
    assert dest.part_budget.held == 0
    assert _dest(endpoint).open_multipart_uploads() == []


def test_check_missing_bucket(moto_endpoint: str) -> None:
    dest = S3Destination("s3://no-such-bucket/x", _options(moto_endpoint))
    with pytest.raises(DestinationError, match="bucket 'no-such-bucket' does not exist"):
        _run(dest, dest.check)


def test_check_rejected_credentials(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # moto checks credentials once INITIAL_NO_AUTH_ACTION_COUNT actions have passed (here: at once);
    # keys not created through its IAM are unknown to it.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID0000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-print-this-secret")
    with MotoServer(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as endpoint_url:
        dest = S3Destination(f"s3://{BUCKET}", _options(endpoint_url))
        with pytest.raises(DestinationError) as caught:
            _run(dest, dest.check)
    message = str(caught.value)
    assert "403" in message and "AWS_ACCESS_KEY_ID" in message and "AWS_PROFILE" in message
    assert "do-not-print-this-secret" not in message and "AKIAEXAMPLEKEYID0000" not in message


def test_check_without_credentials(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    dest = S3Destination(f"s3://{BUCKET}", _options("http://127.0.0.1:9"))
    with pytest.raises(DestinationError, match=r"no usable AWS credentials.*standard AWS chain"):
        _run(dest, dest.check)


def test_check_unknown_profile(aws_env: None) -> None:
    dest = S3Destination(f"s3://{BUCKET}", _options("http://127.0.0.1:9", profile="nobody"))
    with pytest.raises(DestinationError, match="profile 'nobody'"):
        _run(dest, dest.check)


def test_check_unreachable_endpoint(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with SocketClosedPort() as port:
        dest = S3Destination(f"s3://{BUCKET}", _options(f"http://127.0.0.1:{port}"))
        with pytest.raises(DestinationError, match=f"cannot reach the S3 endpoint http://127.0.0.1:{port}"):
            _run(dest, dest.check)


def test_a_store_that_stops_answering_times_out_with_a_message_saying_so(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from apilake.destinations import s3

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setattr(s3, "READ_TIMEOUT", 1)
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        dest = S3Destination(f"s3://{BUCKET}", _options(endpoint))
        started = time.monotonic()
        with pytest.raises(DestinationError, match=f"the S3 endpoint {endpoint} timed out while we tried to access s3://{BUCKET}"):
            _run(dest, dest.check)
    assert time.monotonic() - started < 30  # the read timeout, not obstore's or a test's


def test_check_reads_one_listing_page_however_many_objects_there_are(endpoint: str) -> None:
    from altering_proxy import AlteringProxy

    client = boto3.client("s3", endpoint_url=endpoint)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # S3 lists 1,000 keys a page: two pages
        list(pool.map(lambda i: client.put_object(Bucket=BUCKET, Key=f"landing/k{i:04d}", Body=b"x"), range(1_001)))
    proxy = AlteringProxy(endpoint, match=None)
    with proxy as proxied:
        dest = _dest(proxied)
        _run(dest, dest.check)
    listings = [seen.target for seen in proxy.seen if "list-type=2" in seen.target]
    assert len(listings) == 1, listings


class SocketClosedPort:
    """A loopback port with nothing listening."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "s3://bad bucket/x"])
def test_bad_url(url: str) -> None:
    with pytest.raises(DestinationError, match="bucket"):
        S3Destination(url, S3Options())


@pytest.mark.parametrize(("url", "root"), [("s3://b", ""), ("s3://b/", ""), ("s3://b/p", "p/"), ("s3://b/p/q/", "p/q/")])
def test_url_prefix(url: str, root: str) -> None:
    dest = S3Destination(url, S3Options())
    assert (dest.bucket, dest.root, dest.url) == ("b", root, url)


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "./a"])
def test_unsafe_keys_are_refused(key: str) -> None:
    async def go() -> None:
        async with S3Destination("s3://b/p", S3Options()).open_write(key):
            pass

    with pytest.raises(DestinationError, match="not a valid object key"):
        asyncio.run(go())


GB = 10**9


@pytest.mark.parametrize(
    ("part_size_mb", "size_hint", "size", "largest_stream"),
    [
        (8, 50 * GB, 8 * MIB, 83_886_080_000),  # 50 GB / 9,000 = 5.3 MiB < 8 MiB
        (5, 50 * GB, 6 * MIB, 62_914_560_000),  # 5.3 MiB, rounded up to 6 MiB
        (8, 500 * GB, 53 * MIB, 555_745_280_000),  # 500 GB / 9,000 = 52.98 MiB, rounded up
        (8, 1_500_000_000, 8 * MIB, 83_886_080_000),
        (8, None, 8 * MIB, 83_886_080_000),  # unknown length: up to 78 GiB
        (5, None, 5 * MIB, 52_428_800_000),
        (64, None, 64 * MIB, 671_088_640_000),  # raise part_size_mb for longer unknown streams
        (1, None, 5 * MIB, 52_428_800_000),  # S3's minimum
        (8, 100_000 * GB, 5 * 1024 * MIB, 53_687_091_200_000),  # S3's maximum part
    ],
)
def test_part_size_table(part_size_mb: int, size_hint: int | None, size: int, largest_stream: int) -> None:
    assert part_size(part_size_mb=part_size_mb, size_hint=size_hint) == size
    assert size * MAX_PARTS == largest_stream
    if size_hint is not None and size < MAX_PART:
        assert size_hint <= size * 9_000  # a hinted length fits with 1,000 parts to spare


def test_a_stream_past_10000_parts_fails_naming_the_setting(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from apilake.destinations import s3

    monkeypatch.setattr(s3, "MAX_PARTS", 2)  # S3's 10,000, made small
    dest = _dest(endpoint, part_size_mb=5)
    with pytest.raises(DestinationError, match=r"too big for one S3 multipart upload of 2 parts of 5 MiB; raise s3.part_size_mb"):
        _stream(dest, "long.bin", os.urandom(11 * MIB))
    assert dest.open_multipart_uploads() == []


def test_memory_is_bounded_by_parts_in_flight(endpoint: str) -> None:
    # The stream (from memory) outruns the store, so the transfer fills up to its bound: the parts
    # obstore sends (parts_in_flight), the one it holds waiting for room, the one in the hand-over
    # queue and the one being filled.
    dest = _dest(endpoint, part_size_mb=5, parts_in_flight=2, part_memory_mb=1024)
    block = os.urandom(1 << 20)
    total = 60 * MIB
    bound = (2 + 3) * 5 * MIB

    async def go() -> S3Writer:
        async with dest.open_write("bounded.bin") as writer:
            sent = 0
            while sent < total:
                n = min(total - sent, 65_536 * random.randint(1, 16))  # 64 KiB .. 1 MiB
                await writer.write(block[:n])
                sent += n
        await dest.close()
        return writer

    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        writer = asyncio.run(go())
        traced_peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert 2 * 5 * MIB < writer.peak_held_bytes <= bound
    assert writer.held_bytes == 0 and dest.part_budget.held == 0  # every part let go once sent
    # Parts are memory maps obstore reads in place; what Python allocated meanwhile stays within the bound.
    assert traced_peak <= bound, traced_peak / MIB


def test_spare_part_buffers_of_another_size_are_dropped_not_kept_beside_new_ones() -> None:
    budget = PartBudget(10 * MIB)
    five = budget.buffer(5 * MIB)
    budget.release(0, five)  # sent: kept as a spare
    assert budget.buffer(5 * MIB) is five  # reused
    budget.release(0, five)
    six = budget.buffer(6 * MIB)  # another transfer's part size: the 5 MiB spare goes
    budget.release(0, six)
    assert budget.mapped == 2
    assert budget.buffer(6 * MIB) is six
    assert five.closed


def test_part_memory_is_one_budget_shared_by_all_transfers(endpoint: str) -> None:
    # Four transfers of 4 parts each could hold 4 × (2 + 1) parts; the shared budget allows 2.
    dest = _dest(endpoint, part_size_mb=5, parts_in_flight=2, part_memory_mb=10)
    bodies = {f"shared/{i}.bin": os.urandom(18 * MIB) for i in range(4)}

    async def one(key: str, body: bytes) -> None:
        async with dest.open_write(key) as writer:
            for chunk in _chunks(body, seed=len(key)):
                await writer.write(chunk)

    async def go() -> None:
        await asyncio.gather(*(one(k, b) for k, b in bodies.items()))
        await dest.close()

    asyncio.run(go())
    assert dest.part_budget.peak == 10 * MIB  # used to its limit, never past it
    assert dest.part_budget.held == 0  # every reservation came back
    # 16 parts went through 2 buffers' worth of budget: buffers are reused, not mapped anew per part
    # (a fresh map costs its page faults again); a third may be mapped while a sent one is let go.
    assert dest.part_budget.mapped <= 3, dest.part_budget.mapped
    s3 = boto3.client("s3", endpoint_url=endpoint)
    for key, body in bodies.items():
        assert s3.get_object(Bucket=BUCKET, Key=f"landing/{key}")["Body"].read() == body


def test_a_part_bigger_than_the_budget_still_goes_through_alone(endpoint: str) -> None:
    dest = _dest(endpoint, part_size_mb=8, part_memory_mb=5)
    body = os.urandom(20 * MIB)

    async def go() -> None:
        async with dest.open_write("big.bin") as writer:
            for chunk in _chunks(body):
                await writer.write(chunk)
        await dest.close()

    asyncio.run(go())
    assert dest.part_budget.peak == 8 * MIB and dest.part_budget.held == 0
    assert boto3.client("s3", endpoint_url=endpoint).get_object(Bucket=BUCKET, Key="landing/big.bin")["Body"].read() == body


def test_the_part_budget_is_shared_by_event_loops_in_other_threads() -> None:
    # A Dask worker runs each task on its own loop in its own thread; all share the destination's budget.
    budget = PartBudget(8 * MIB)
    held = threading.Event()
    times: dict[str, float] = {}

    async def holder() -> None:
        await budget.reserve(8 * MIB)
        held.set()
        await asyncio.to_thread(wait_for, lambda: budget._waiting)  # the other loop waits for room
        assert "in" not in times  # and cannot get in while this one holds it all
        times["released"] = time.monotonic()
        budget.release(8 * MIB)

    async def waiter() -> None:
        await asyncio.to_thread(held.wait, 5)
        await asyncio.wait_for(budget.reserve(5 * MIB), 30)
        times["in"] = time.monotonic()
        budget.release(5 * MIB)

    threads = [threading.Thread(target=asyncio.run, args=(work(),)) for work in (holder, waiter)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert times["in"] - times["released"] < 10  # woken by the release itself, not by its own timeout
    assert budget.held == 0 and budget.peak == 8 * MIB
