import gzip
import hashlib

import pytest

from apilake.errors import IntegrityError
from apilake.integrity import Checksum, StreamCheck

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


@pytest.mark.parametrize(
    "data, message",
    [
        (b"not gzip at all", None),  # not inflated: it passes on its length
        (b"not gzip at al", "ended after 14 of 15 bytes"),
        (b"not gzip at all!", "longer than"),
    ],
)
def test_non_gzip_only_checks_length(data: bytes, message: str | None) -> None:
    check = StreamCheck(expected_length=15, gzip=False)
    if message is None:
        feed(data, check, size=4)
        assert check.size == len(data) and check.sha256 == hashlib.sha256(data).hexdigest()
    else:
        with pytest.raises(IntegrityError, match=message):
            feed(data, check, size=4)


def test_length_mode_does_not_inflate_but_still_checks_the_length() -> None:
    damaged = BODY[:100] + b"\xff" * 200 + BODY[300:]
    check = StreamCheck(expected_length=len(damaged), gzip=False, checksum="crc32c")
    feed(damaged, check)  # verify: length trusts the content; the length still holds
    with pytest.raises(IntegrityError, match="ended after"):
        feed(BODY[:-1], StreamCheck(expected_length=len(BODY), gzip=False))


# Standard check values of the three algorithms for b"123456789" (CRC catalogue, FIPS 180-4).
@pytest.mark.parametrize(
    "algorithm, expected",
    [
        ("crc32c", "crc32c:e3069283"),
        ("sha256", "sha256:15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225"),
    ],
)
def test_checksums_match_their_standard_check_values_in_any_chunking(algorithm: str, expected: str) -> None:
    for size in (1, 4, 9):
        check = StreamCheck(expected_length=9, gzip=False, checksum=algorithm)
        feed(b"123456789", check, size)
        assert check.checksum.text == expected
    assert (check.sha256 is not None) == (algorithm == "sha256")


def test_an_unknown_checksum_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown checksum 'md5'"):
        Checksum("md5")
