"""Primary-keyed tables: one row per key, its latest version, from every raw object of the table.

A table with `table.primary_key` is a function of ALL its raw objects, so it stays exactly what
landed and a rebuild is idempotent: of the versions of one key, the row kept is the one landed
for the latest run date (an incremental endpoint: the newest window), then with the newest
cursor value (an incremental endpoint's `cursor_path`; a record without one comes first), then
the last by position (unit, page, row). When any date's raw objects change, the whole table is
rebuilt (`refresh`): a version in one date can supersede a row kept from another.

Two passes over the raw objects: `latest` reads each one and keeps, per row, only its key (as
text), its order and where it is; Arrow sorts those and takes the last of each key. Then the
partitions are written as usual, each object's batches cut to the rows kept (`Kept.rows`). Memory
is the first pass's columns, for every version of every date (not the records themselves):
measured, ~230 MB and ~4 s for a million versions of 500,000 short keys.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import jmespath
import pyarrow as pa
import pyarrow.compute as pc

from apilake.errors import TableError
from apilake.incremental import parse
from apilake.tables.convert import DATE_COLUMN, record_batches
from apilake.tables.plan import Partition, RawObject

Opener = Callable[[RawObject, str], Any]  # as `refresh.Opener`
_CURSOR, _OBJECT, _ROW = "__apilake_cursor", "__apilake_object", "__apilake_row"
_NAMES = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_NONE = float("-inf")  # the cursor of a record without one: before any version that has one


class Kept:
    """Per raw key, the positions of the object's rows that are the latest version of their key."""

    def __init__(self, rows: dict[str, list[int]]) -> None:
        self.rows = {key: sorted(found) for key, found in rows.items()}

    def __call__(self, obj: RawObject, batch: pa.RecordBatch, offset: int) -> pa.RecordBatch:
        """The rows of `batch` (the object's rows from `offset` on) that are kept."""
        found = self.rows.get(obj.key, [])
        start, end = bisect_left(found, offset), bisect_left(found, offset + batch.num_rows)
        if end - start == batch.num_rows:
            return batch
        return batch.take(pa.array([row - offset for row in found[start:end]], pa.int64()))


def latest(identifier: str, partitions: list[Partition], opener: Opener) -> Kept:
    """Which rows of these partitions (every date of one table) hold the latest version of each key.

    A record without a key column, or with a null or non-scalar key value, fails the table
    (`TableError` naming the key, the column and the raw object): a row that cannot be told apart
    would otherwise be dropped or kept at random.
    """
    keys = {o.primary_key for p in partitions for o in p.objects}
    if len(keys) > 1:  # two endpoints of one table (`table.name`), one without a key or with another
        raise TableError(f"table {identifier}: its endpoints give it different table.primary_key values "
                         f"({' and '.join(sorted(map(repr, map(list, keys))))}); give them one")  # fmt: skip
    key = list(keys.pop()) if keys else []
    objects = sorted(((p.date, o) for p in partitions for o in p.objects), key=lambda d_o: (d_o[0], d_o[1].unit, d_o[1].page, d_o[1].key))
    parts = []
    for number, (date, obj) in enumerate(objects):
        offset = 0
        with opener(obj, date) as stream:
            for batch in record_batches(obj, date, stream):
                parts.append(_order(identifier, key, obj, batch, number, offset))
                offset += batch.num_rows
    if not parts:
        return Kept({})
    versions = pa.Table.from_batches(parts).sort_by([(DATE_COLUMN, "ascending"), (_CURSOR, "ascending"), (_OBJECT, "ascending"),
                                                    (_ROW, "ascending")])  # fmt: skip
    versions = versions.append_column("__seq", pa.array(range(versions.num_rows), pa.int64()))
    last = versions.group_by([f"__key{i}" for i in range(len(key))], use_threads=False).aggregate([("__seq", "max")])
    winners = versions.take(last["__seq_max"]).select([_OBJECT, _ROW])
    rows: dict[str, list[int]] = {}
    for number, row in zip(winners[_OBJECT].to_pylist(), winners[_ROW].to_pylist(), strict=True):
        rows.setdefault(objects[number][1].key, []).append(row)
    return Kept(rows)


def _order(identifier: str, key: list[str], obj: RawObject, batch: pa.RecordBatch, number: int, offset: int) -> pa.RecordBatch:
    """What orders one batch's rows among the versions of their keys: the key columns as text,
    `_date`, the cursor (as a number: epoch seconds for a date-time), the object's order and the row."""
    columns, names = [], []
    for i, name in enumerate(key):
        if name not in batch.schema.names:
            raise TableError(f"table {identifier}: {obj.key}: a record without its primary key column {name!r} (table.primary_key "
                             f"{key!r}); fix table.primary_key, or remove it to keep every version")  # fmt: skip
        column = batch.column(name)
        if pa.types.is_nested(column.type):
            raise TableError(f"table {identifier}: {obj.key}: primary key column {name!r} holds {column.type}, not a single value")
        if column.null_count:
            raise TableError(f"table {identifier}: {obj.key}: {column.null_count} record(s) with no value in primary key column {name!r}")
        columns.append(pc.cast(column, pa.string()))
        names.append(f"__key{i}")
    cursors = _cursors(obj.cursor, batch) if obj.cursor else pa.repeat(pa.scalar(_NONE), batch.num_rows)
    columns += [batch.column(DATE_COLUMN), cursors, pa.repeat(pa.scalar(number, pa.int64()), batch.num_rows),
                pa.array(range(offset, offset + batch.num_rows), pa.int64())]  # fmt: skip
    return pa.RecordBatch.from_arrays(columns, names=[*names, DATE_COLUMN, _CURSOR, _OBJECT, _ROW])


def _cursors(path: str, batch: pa.RecordBatch) -> pa.Array:
    """Each row's cursor as a number. A path of plain names (`updated_at`, `meta.changed`) to
    numbers or ISO 8601 date-times with a zone is read as a column; anything else record by record."""
    if _NAMES.fullmatch(path):
        column = _field(batch, path)
        if column is None:
            return pa.repeat(pa.scalar(_NONE), batch.num_rows)
        try:
            if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
                return pc.fill_null(pc.cast(column, pa.float64()), _NONE)
            if pa.types.is_string(column.type):
                micros = pc.cast(pc.cast(column, pa.timestamp("us", tz="UTC")), pa.int64())
                return pc.fill_null(pc.divide(pc.cast(micros, pa.float64()), 1e6), _NONE)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # numbers as text, date-times without a zone: read as `incremental.parse` reads them
    search = jmespath.compile(path).search
    return pa.array([_epoch(search(row)) for row in batch.to_pylist()], pa.float64())


def _field(batch: pa.RecordBatch, path: str) -> pa.Array | None:
    """The column at a path of plain names; None when the records have no such field."""
    first, *rest = path.split(".")
    if first not in batch.schema.names:
        return None
    column = batch.column(first)
    for name in rest:
        if not pa.types.is_struct(column.type) or column.type.get_field_index(name) < 0:
            return None
        column = pc.struct_field(column, name)
    return column


def _epoch(value: Any) -> float:
    """A cursor value as a number to order by; before any when it has none (`on_missing_cursor`)."""
    for kind in ("number", "datetime"):
        try:
            found = parse(value, kind)
        except ValueError:
            continue
        return found if isinstance(found, float) else found.timestamp()
    return _NONE
