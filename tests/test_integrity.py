import gzip
import hashlib

import pytest

from apilake.errors import IntegrityError
from apilake.integrity import StreamCheck

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
