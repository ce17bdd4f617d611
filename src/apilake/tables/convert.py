"""A raw object → Arrow record batches: JSON (and NDJSON) pages record by record, CSV block by block.

Memory stays bounded by one JSON page (a page is capped by the source's `max_json_mb`) or one
CSV block, whatever the size of a file. Every value is kept: a column whose values share no one
Arrow type (a number here, "N/A" there; objects of changing shape) becomes text — strings as
they are, anything else as JSON. A column that is all null has no type yet and is left out
until a value arrives.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, cast

import jmespath
import pyarrow as pa
import pyarrow.csv as pacsv
from isal import igzip_lib

from apilake.errors import TableError
from apilake.ndjson import landed_page
from apilake.tables.plan import RawObject

DATE_COLUMN = "_date"
OBJECT_COLUMN = "_apilake_object"
RUN_COLUMN = "_apilake_run_id"
MAX_JSON_OBJECT_BYTES = 1 << 30  # a JSON raw object is parsed whole: past this it fails its date
CSV_BLOCK_BYTES = 1 << 20  # a batch of ~20k rows of a bulk file: what a CSV reader thread holds
IsalError = cast("type[Exception]", igzip_lib.IsalError)  # a class; isal's stub declares an instance


def record_batches(obj: RawObject, date: str, stream: BinaryIO, csv_types: dict[str, pa.DataType] | None = None) -> Iterator[pa.RecordBatch]:
    """The rows of one raw object, with the unit's values and lineage as columns. `csv_types`:
    CSV columns read as these types, not as their first block's values suggest (`Retype`).

    A damaged object (JSON that does not parse, a ragged CSV line, a gzip that does not
    inflate) raises `TableError` naming the object (a ragged CSV line is quoted).
    """
    if obj.format == "unknown":
        raise TableError(f"{obj.key}: cannot tell how to read it as rows (not .csv, .csv.gz or .json); set the endpoint's "
                         "`table: {format: csv}` or `json`, or `table: false` to leave the endpoint out")  # fmt: skip
    rows = _json_rows(obj, stream) if obj.format in ("json", "ndjson") else _csv_rows(obj, stream, csv_types or {})
    for batch in rows:
        yield with_unit_columns(batch, obj, date)


class Retype(Exception):
    """A CSV column whose values past its first block do not fit the type that block gave it:
    the object must be read again from its start with the wider `kind` (int → double → text;
    a column empty in the first block takes the value's type)."""

    def __init__(self, key: str, column: str, was: str, kind: pa.DataType) -> None:
        super().__init__(f"{key}: CSV column {column!r} holds more than {was}, read again as {kind}")
        self.key, self.column, self.kind = key, column, kind


_CONVERSION = re.compile(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to (\w+): invalid value '(.*)'", re.S)


def _retype(obj: RawObject, exc: Exception, schema: pa.Schema | None) -> Retype | None:
    """The `Retype` a CSV conversion error asks for, or None for another error."""
    found = _CONVERSION.match(str(exc))
    if found is None or schema is None or int(found[1]) >= len(schema):
        return None
    was, value = found[2], found[3]
    parsers: list[tuple[pa.DataType, Callable[[str], object]]] = [(pa.int64(), int), (pa.float64(), float)]
    wider = {"null": parsers, "int64": parsers[1:]}.get(was, [])
    kind = next((kind for kind, parse in wider if _parses(parse, value)), pa.string())
    return Retype(obj.key, schema.names[int(found[1])], was, kind)


def _json_rows(obj: RawObject, stream: BinaryIO) -> Iterator[pa.RecordBatch]:
    """A JSON object is parsed whole: read (and inflated) at most `MAX_JSON_OBJECT_BYTES`, so a
    gzip bomb among a vendor's files fails its date instead of the process."""
    body = _gunzip(obj, stream) if obj.key.endswith(".gz") else stream.read(MAX_JSON_OBJECT_BYTES + 1)
    if len(body) > MAX_JSON_OBJECT_BYTES:
        raise TableError(f"{obj.key}: JSON of more than {MAX_JSON_OBJECT_BYTES >> 20} MiB{' inflated' if obj.key.endswith('.gz') else ''} "
                         "is not read as rows (a JSON object is parsed whole); land such data as CSV, or leave it out with `table: false`")  # fmt: skip
    try:
        doc = landed_page(body, obj.format)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TableError(f"{obj.key}: not {obj.format.upper()} ({exc})") from None
    rows = records_of(doc, obj.records, obj.key)
    if rows:
        yield rows_to_batch(rows)


def records_of(doc: Any, path: str | None, key: str) -> list[dict[str, Any]]:
    """The rows of a page: at `path` (nothing found: none), else a top-level array's items, else
    the body as one row. Items that are not objects become rows of one column, `value`."""
    found = jmespath.search(path, doc) if path else doc
    if found is None:
        return []
    if isinstance(found, dict):
        return [found]
    if not isinstance(found, list):
        if path is None:
            return [{"value": found}]
        raise TableError(f"{key}: the records path {path!r} finds a {type(found).__name__}, not a list or an object (set `table.records`)")
    return [item if isinstance(item, dict) else {"value": item} for item in found]


def rows_to_batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    """Rows → one batch, column by column, so one column's mixed values cannot cost another its type."""
    names = list(dict.fromkeys(itertools.chain.from_iterable(rows)))
    arrays, fields = [], []
    for name in names:
        array = column_array([row.get(name) for row in rows])
        if array is not None:
            arrays.append(array)
            fields.append(pa.field(name, array.type))
    if not arrays:  # records of null fields only are still rows (their unit's and lineage columns)
        return pa.RecordBatch.from_struct_array(pa.array([{}] * len(rows), pa.struct([])))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def column_array(values: list[Any]) -> pa.Array | None:
    """One column: its natural Arrow type where every value fits one and Parquet can store it,
    else text. None for a column with no value at all."""
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([as_text(v) for v in values], pa.string())
    if pa.types.is_null(array.type):
        return None
    if not _storable(array.type):
        return pa.array([as_text(v) for v in values], pa.string())
    return array


def _storable(kind: pa.DataType) -> bool:
    """Parquet and Iceberg need a type for every leaf and a field in every struct."""
    if pa.types.is_null(kind):
        return False
    if pa.types.is_struct(kind):
        return kind.num_fields > 0 and all(_storable(kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _storable(kind.value_type)
    return True


def as_text(value: Any) -> str | None:
    """Text as it is; anything else as JSON (`5`, `true`, `{"a":1}`). An int is its digits, as
    in JSON, without the encoder's cost (a column of numbers and "N/A" runs through here)."""
    if value is None or isinstance(value, str):
        return value
    if type(value) is int:  # not a bool: JSON's `true`
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _gunzip(obj: RawObject, stream: BinaryIO) -> bytes:
    """The object inflated, up to one byte past `MAX_JSON_OBJECT_BYTES`."""
    from isal import igzip

    try:
        return igzip.IGzipFile(fileobj=stream, mode="rb").read(MAX_JSON_OBJECT_BYTES + 1)
    except (OSError, EOFError, IsalError) as exc:
        raise TableError(f"{obj.key}: not a readable gzip file ({exc})") from None


def _parses(parse: Any, value: str) -> bool:
    try:
        parse(value)
    except ValueError:
        return False
    return True


def _csv_rows(obj: RawObject, stream: BinaryIO, types: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
    source: Any = stream
    if obj.key.lower().endswith(".gz"):
        from isal import igzip

        source = igzip.IGzipFile(fileobj=stream, mode="rb")
    options = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES)
    parse = pacsv.ParseOptions(delimiter="\t" if re.search(r"\.tsv(\.gz)?$", obj.key, re.IGNORECASE) else ",")
    reader = None
    try:
        reader = pacsv.open_csv(pa.PythonFile(source, mode="r"), read_options=options, parse_options=parse,
                                convert_options=pacsv.ConvertOptions(column_types=types))  # fmt: skip
        for batch in reader:
            if batch.num_rows:
                yield _typed(batch)
    except (pa.ArrowInvalid, OSError, EOFError, IsalError) as exc:
        if (wider := _retype(obj, exc, reader.schema if reader is not None else None)) is not None:
            raise wider from None
        raise TableError(f"{obj.key}: cannot read it as CSV: {str(exc).splitlines()[0]}") from None


def _typed(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Columns CSV inference left untyped (empty in this block) are left out, as JSON's are."""
    keep = [i for i, f in enumerate(batch.schema) if not pa.types.is_null(f.type)]
    return batch if len(keep) == batch.num_columns else batch.select(keep)


def with_unit_columns(batch: pa.RecordBatch, obj: RawObject, date: str) -> pa.RecordBatch:
    """The batch plus `_date`, the unit's values (`_`-prefixed where a record field has the name)
    and lineage. A record field named like one of apilake's own columns is kept `_`-prefixed."""
    rows = batch.num_rows
    own = {DATE_COLUMN: pa.repeat(pa.scalar(dt.date.fromisoformat(date), pa.date32()), rows)}
    for name, value in obj.values:
        column = f"_{name}" if name in batch.schema.names else name
        own[column] = pa.repeat(pa.scalar(value, pa.string()), rows)
    own[OBJECT_COLUMN] = pa.repeat(pa.scalar(obj.key, pa.string()), rows)
    own[RUN_COLUMN] = pa.repeat(pa.scalar(obj.run_id, pa.string()), rows)
    names = [f"_{name}" if name in own else name for name in batch.schema.names] + list(own)
    return pa.RecordBatch.from_arrays([*batch.columns, *own.values()], names=names)
