"""`parse_cost`: the memory a JSON parse would take, told from the body's tokens, table-driven
against what `json.loads` really allocates for documents of every shape."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from apilake.fetch.json import PARSE_FACTOR, parse_cost

N = 20_000


def parsed_bytes(body: bytes) -> int:
    """The peak memory `json.loads(body)` allocates."""
    tracemalloc.start()
    try:
        json.loads(body)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" + b"{}," * N + b"{}]", id="empty-objects"),
        pytest.param(b"[" + b"[]," * N + b"[]]", id="empty-arrays"),
        pytest.param(b"[" + b'{"":{}},' * N + b"{}]", id="nested-objects"),
        pytest.param(b"[" + b'{"id":123456,"name":"foo","amount":1.5},' * N + b"{}]", id="records"),
        pytest.param(b"[" + b"[1700000000,1.5]," * N + b"[]]", id="points"),
        pytest.param(b"{" + b",".join(b'"k%d":0' % i for i in range(N)) + b"}", id="distinct-keys"),
        pytest.param(b"[" + b"1234567," * N + b"1]", id="numbers"),
        pytest.param(b"[" + b'"ab",' * N + b'"ab"]', id="short-strings"),
        pytest.param(b"[" + b'"abcdefghij",' * N + b'"a"]', id="ten-char-strings"),
        pytest.param(("[" + '"日本",' * N + '"a"]').encode(), id="non-ascii-strings"),
    ],
)
def test_parse_cost_is_within_a_small_factor_of_the_truth(body: bytes) -> None:
    assert 0.4 < parse_cost(body) / parsed_bytes(body) < 3


@pytest.mark.parametrize(
    "body, cost",
    [
        (b"", 0),
        (b"1", 0),
        (b"[]", 56),
        (b'{"a":1}', 164 + 50),
        (b'[{"a":1},{"a":2}]', 56 + 2 * (164 + 50) + 24),
        (b'["{[:,"]', 56 + 50 + 64 + 56 + 100 + 24),  # tokens inside strings count too
    ],
)
def test_parse_cost_counts_tokens(body: bytes, cost: int) -> None:
    assert parse_cost(body) == cost


def test_the_shapes_that_explode_are_refused_before_records_are() -> None:
    records = b"[" + b'{"date":"2024-01-01","device":"iphone","estimate":12345,"country":"US"},' * N + b"{}]"
    objects = b"[" + b"{}," * N + b"{}]"
    assert parse_cost(records) < PARSE_FACTOR * len(records)  # a page of records as large as max_json_mb parses
    assert parse_cost(objects) > PARSE_FACTOR * len(objects) / 0.75  # `[{},…]` over three quarters of it does not
