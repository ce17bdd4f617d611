"""A batch against its table's schema: union by name, widening, or a clear error.

Iceberg itself widens int → long and float → double in place. A column that must widen
further (long → double, a number → text) cannot change type under files already written, so
the table is rebuilt from the raw zone in one commit with the wider type (`Widen`). A batch
narrower than its table (ints in a double column, numbers in a text column) is cast up.
"""

from __future__ import annotations

import functools

import pyarrow as pa
from pyiceberg.schema import Schema
from pyiceberg.types import DoubleType, FloatType, IcebergType, IntegerType, LongType, PrimitiveType, StringType

from apilake.errors import TableError
from apilake.tables.convert import as_text


class Widen(Exception):
    """Columns of a table that must take a wider type: the table is rebuilt with it."""

    def __init__(self, columns: dict[str, IcebergType]) -> None:
        super().__init__(", ".join(f"{name} → {kind}" for name, kind in columns.items()))
        self.columns = columns


@functools.lru_cache(maxsize=256)
def iceberg_types(arrow: pa.Schema) -> dict[str, IcebergType]:
    """The Iceberg type of each top-level column of an Arrow schema (worked out once per schema:
    pages of one endpoint share a handful). Callers do not change the answer."""
    from pyiceberg.catalog import Catalog

    return {f.name: f.field_type for f in Catalog._convert_schema_if_needed(arrow).fields}


def fit(batch: pa.RecordBatch, schema: Schema, *, table: str, key: str) -> pa.RecordBatch:
    """The batch, its columns cast up to the table's wider types. Raises `Widen` when the table's
    must widen instead, and `TableError` (naming table, column, both types and the raw object)
    when neither can hold the other. New columns and new struct fields are left to union by name."""
    known = {f.name: f.field_type for f in schema.fields}
    widen: dict[str, IcebergType] = {}
    columns = list(batch.columns)
    for i, (name, theirs) in enumerate(iceberg_types(batch.schema).items()):
        ours = known.get(name)
        if ours is None or ours == theirs or _promotes(theirs, ours):
            continue
        if isinstance(ours, StringType):
            columns[i] = pa.array([as_text(v) for v in batch.column(i).to_pylist()], pa.string())
        elif _number(ours) and _number(theirs) and isinstance(ours, (FloatType, DoubleType)):
            columns[i] = batch.column(i).cast(pa.float64() if isinstance(ours, DoubleType) else pa.float32())
        elif _number(ours) and isinstance(theirs, (FloatType, DoubleType)):
            widen[name] = DoubleType()
        elif isinstance(ours, PrimitiveType) and isinstance(theirs, StringType):
            widen[name] = StringType()
        elif ours.is_primitive or theirs.is_primitive:
            raise TableError(f"table {table}: column {name!r} was {ours}, but {key} holds {theirs}; the partition was left as it was")
    if widen:
        raise Widen(widen)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _promotes(theirs: IcebergType, ours: IcebergType) -> bool:
    """Iceberg's own in-place promotions (the table's type is the wider one already)."""
    return (isinstance(theirs, IntegerType) and isinstance(ours, LongType)) or (isinstance(theirs, FloatType) and isinstance(ours, DoubleType))


def _number(kind: IcebergType) -> bool:
    return isinstance(kind, (IntegerType, LongType, FloatType, DoubleType))


def cast_to(batch: pa.RecordBatch, columns: dict[str, IcebergType]) -> pa.RecordBatch:
    """A batch with these columns in their widened type (during a widening rebuild)."""
    arrays = list(batch.columns)
    for i, name in enumerate(batch.schema.names):
        kind = columns.get(name)
        if isinstance(kind, StringType) and not pa.types.is_string(batch.schema.field(i).type):
            arrays[i] = pa.array([as_text(v) for v in batch.column(i).to_pylist()], pa.string())
        elif isinstance(kind, DoubleType) and not pa.types.is_string(batch.schema.field(i).type):
            arrays[i] = batch.column(i).cast(pa.float64())
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
