import asyncio
import gzip
import hashlib
import random
from collections.abc import AsyncIterator

import pytest

from apilake.errors import IntegrityError
from apilake.integrity import StreamCheck, copy_checked

BODY = gzip.compress(b"a,b\n" * 50_000) + gzip.compress(b"second member\n" * 1000)


def feed(data: bytes, check: StreamCheck, size: int = 777) -> None:
    for i in range(0, len(data), size):
        check.update(data[i : i + size])
    check.finish()


def test_whole_multi_member_gzip_passes_and_hashes() -> None:
    check = StreamCheck(expected_length=len(BODY), gzip=True)
    feed(BODY, check)
    assert check.size == len(BODY)
    assert check.sha256 == hashlib.sha256(BODY).hexdigest()


@pytest.mark.parametrize(
    "data, expected_length, message",
    [
        (BODY[: len(BODY) // 2], len(BODY), "ended after"),
        (BODY[: len(BODY) // 2], None, "truncated"),
        (BODY[:-30], len(BODY) - 30, "truncated|not a valid gzip"),
        (BODY[:100] + b"\xff" * 200 + BODY[300:], len(BODY), "not a valid gzip"),
        (BODY + b"x", len(BODY), "longer than"),
        (b"not gzip at all", None, "not a valid gzip"),
    ],
)
def test_damaged_bodies_fail(data: bytes, expected_length: int | None, message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        feed(data, StreamCheck(expected_length=expected_length, gzip=True))


def test_non_gzip_only_checks_length() -> None:
    feed(b"plain", StreamCheck(expected_length=5, gzip=False))


def copy(data: bytes, expected_length: int | None) -> tuple[StreamCheck, bytes]:
    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 200_000):
            yield data[i : i + 200_000]

    written = bytearray()

    async def write(chunk: bytes) -> None:
        written.extend(chunk)

    check = StreamCheck(expected_length=expected_length, gzip=True)
    asyncio.run(copy_checked(pieces(), check, write))
    return check, bytes(written)


BIG = b"".join(gzip.compress(random.Random(i).randbytes(300_000)) for i in range(6))  # past one batch (1 MiB)


@pytest.mark.parametrize("expected_length", [len(BIG), None])
def test_copy_checked_in_threads_copies_and_hashes(expected_length: int | None) -> None:
    check, written = copy(BIG, expected_length)
    assert written == BIG and check.sha256 == hashlib.sha256(BIG).hexdigest()


@pytest.mark.parametrize("data", [BIG[: len(BIG) // 2 + 1000], BIG[:1000] + b"\xff" * 300 + BIG[1300:]])
def test_copy_checked_in_threads_rejects_damage(data: bytes) -> None:
    with pytest.raises(IntegrityError):
        copy(data, None)
