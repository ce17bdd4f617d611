import email.utils

import pytest

from apilake.errors import TransferError
from apilake.fetch.client import is_transient, origin, parse_retry_after


@pytest.mark.parametrize(
    "url, expected",
    [
        ("https://API.example.com/v1", ("https", "api.example.com", 443)),
        ("http://127.0.0.1:8080/x?y=1", ("http", "127.0.0.1", 8080)),
        ("http://h", ("http", "h", 80)),
    ],
)
def test_origin(url: str, expected: tuple) -> None:
    assert origin(url) == expected


def test_a_bad_port_is_a_transfer_error_not_a_crash() -> None:
    with pytest.raises(TransferError, match="bad port"):
        origin("https://h:99999/x?signature=abc")


@pytest.mark.parametrize("status, transient", [(400, False), (401, False), (403, False), (404, False), (408, True), (428, True), (429, True), (500, True), (503, True), (507, True)])
def test_is_transient(status: int, transient: bool) -> None:
    assert is_transient(status) is transient


@pytest.mark.parametrize(
    "value, expected",
    [(None, None), ("", None), ("7", 7.0), ("soon", None), (email.utils.formatdate(1_000_030, usegmt=True), 30.0), (email.utils.formatdate(999_000, usegmt=True), 0.0)],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=1_000_000) == expected
