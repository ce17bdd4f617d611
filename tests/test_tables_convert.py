"""Raw objects to rows: what a page, a gzip bomb and null-only records become."""

from __future__ import annotations

import gzip
import io
import json

import pytest

from apilake.errors import TableError
from apilake.tables import convert
from apilake.tables.convert import record_batches, rows_to_batch
from apilake.tables.plan import RawObject


def raw(key: str, records: str | None = None) -> RawObject:
    return RawObject(key, 0, "sha256:x", "run", (("market", "ios"),), "json", records)


@pytest.mark.parametrize(
    "rows, columns, count",
    [
        ([{"a": 1}, {"a": None}], ["a"], 2),
        ([{"a": None}, {"b": None}], [], 2),  # fields of no value at all: the rows stay
        ([], [], 0),
    ],
)
def test_rows_to_batch_keeps_every_row(rows: list[dict], columns: list[str], count: int) -> None:
    batch = rows_to_batch(rows)
    assert (batch.schema.names, batch.num_rows) == (columns, count)


def test_a_gzip_json_bomb_fails_its_object_without_inflating_it_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(convert, "MAX_JSON_OBJECT_BYTES", 1000)
    bomb = gzip.compress(b"[" + b"{}," * 100_000 + b"{}]")
    with pytest.raises(TableError, match=r"data\.json\.gz: JSON of more than 0 MiB inflated is not read as rows"):
        list(record_batches(raw("s/e/dt=2026-11-25/data.json.gz"), "2026-11-25", io.BytesIO(bomb)))
    small = gzip.compress(json.dumps([{"id": 1}, {"id": 2}]).encode())
    [batch] = record_batches(raw("s/e/dt=2026-11-25/data.json.gz"), "2026-11-25", io.BytesIO(small))
    assert batch.column("id").to_pylist() == [1, 2] and batch.column("market").to_pylist() == ["ios", "ios"]


def test_ndjson_pages_are_read_as_rows_one_a_line() -> None:
    obj = RawObject("s/e/dt=2026-11-25/data.ndjson", 0, "sha256:x", "run", (("market", "ios"),), "ndjson", None)
    body = b'{"id": 1, "v": "a"}\r\n\n{"id": 2, "v": "b"}\n'  # CRLF, a blank line and the trailing newline hold no row
    [batch] = record_batches(obj, "2026-11-25", io.BytesIO(body))
    assert batch.column("id").to_pylist() == [1, 2] and batch.column("v").to_pylist() == ["a", "b"]
    with pytest.raises(TableError, match=r"data\.ndjson: not NDJSON \(line 2 is not JSON"):
        list(record_batches(obj, "2026-11-25", io.BytesIO(b'{"id": 1}\n{"id": \n')))
