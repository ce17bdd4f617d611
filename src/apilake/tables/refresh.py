"""Building tables: each changed date's partition rewritten from the raw zone, one commit per table.

Per table: the dates whose fingerprint (table property `apilake.fingerprint.<date>`) differs
from their raw objects' are rebuilt. Their rows stream into Parquet files (zstd, rolled at
`tables.target_file_mb`, row groups of many pages), then ONE overwrite snapshot deletes the
dates' old data files, adds the new ones and records the new fingerprints. A date whose raw
objects fail to read is left as it was; the others go on. When another process commits first,
the table is read again and its work redone (`ATTEMPTS`): of two builders of one date, the
second finds the date done.

A table with `table.primary_key` keeps one row per key (`upsert`): when any of its dates
changed, every date is rebuilt, each raw object cut to its latest versions, and the one snapshot
replaces all the table's files; a date that fails then commits nothing. Its versions must meet
in one place, so it is built here, never by a `writer`.

With a `writer` (the Dask executor's), each changed date's files are written elsewhere
(`write_partition`, on a worker) and come back as data file descriptions; this process fits
their schemas into the commit's (`_Build.take`) and still makes the one commit. A partition whose
files do not fit as written (two workers numbered one new column differently) is written again
here, and a column that must widen rebuilds the table here.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.noop import NoopCatalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, TableAlreadyExistsError, ValidationError, ValidationException
from pyiceberg.expressions import In
from pyiceberg.io import load_file_io
from pyiceberg.io.fileformat import FileFormatFactory
from pyiceberg.io.pyarrow import (
    _get_parquet_writer_kwargs,
    _to_requested_schema,
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
    pyarrow_to_schema,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.schema import Schema, index_by_id
from pyiceberg.table import Table, Transaction
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata

from apilake.errors import TableError
from apilake.tables import TableResult
from apilake.tables.convert import DATE_COLUMN, OBJECT_COLUMN, RUN_COLUMN, Retype, record_batches
from apilake.tables.plan import Partition, RawObject
from apilake.tables.schema import Widen, cast_to, fit

log = logging.getLogger("apilake")

FINGERPRINT = "apilake.fingerprint."
ATTEMPTS = 8
ROW_GROUP_ROWS = 64 * 1024  # batches are buffered into row groups of about this many rows
GATHER_ROWS = 64 * 1024  # consecutive pages of one schema are fitted and written in batches of about this many rows
TABLE_PROPERTIES = {"format-version": "2", "write.parquet.compression-codec": "zstd"}

Opener = Callable[[RawObject, str], Any]  # (object, date) → a context manager yielding a binary stream
Keep = Callable[[RawObject, pa.RecordBatch, int], pa.RecordBatch]  # (object, its batch, the batch's first row) → the rows written


@dataclass(frozen=True, repr=False)
class PartitionWork:
    """What another process needs to write one partition's data files (`write_partition`): the
    commit's table metadata as begun here (schema with field ids, spec, location)."""

    identifier: str
    metadata: TableMetadata
    io_properties: dict[str, str]  # the table's FileIO (a catalog's credentials among them)
    partition: Partition
    target_bytes: int

    def __repr__(self) -> str:  # Dask may print task arguments: never the credentials
        return f"<apilake partition {self.identifier} {self.partition.date}>"


@dataclass
class Written:
    """One partition's data files as written elsewhere, or why not."""

    date: str
    files: list[DataFile] = field(default_factory=list)
    schema: Schema | None = None  # the table's schema the files were written with (new columns numbered there)
    rows: int = 0
    failed: str | None = None  # a bad raw object: the date is left as it was
    widen: dict[str, Any] = field(default_factory=dict)  # columns that must widen: the table is rebuilt here
    pid: int = 0  # the process that wrote the files


Writer = Callable[[list[PartitionWork]], list[Written]]  # writes partitions elsewhere (a Dask cluster)


def refresh_table(
    catalog: Catalog,
    identifier: str,
    partitions: list[Partition],
    opener: Opener,
    *,
    force: bool = False,
    every_date: Callable[[], list[Partition]] = list,
    target_bytes: int = 128 << 20,
    on_partition: Callable[[Partition], None] = lambda p: None,
    forget: Callable[[], None] = lambda: None,
    remember: Callable[[Table], None] = lambda table: None,
    writer: Writer | None = None,
) -> TableResult:
    """Rebuild the changed date partitions of one table in one commit; `every_date` gives all the
    table's partitions, for a rebuild with a widened column type. `forget` is called before a
    build and `remember` with the committed table after its commit (the lake's table state).
    `writer` writes the partitions' files elsewhere (not for a widening rebuild, nor a
    primary-keyed table: any changed date rebuilds it whole)."""
    _lean_memory()
    widen: dict[str, Any] = {}
    keyed = any(p.primary_key for p in partitions)  # one row per key: rebuilt whole (`upsert`)
    if keyed and writer is not None:
        log.info("table %s has a primary key: built whole by this process, not by the cluster's workers", identifier)
    for attempt in range(ATTEMPTS):
        table = _load(catalog, identifier)
        todo = partitions if widen else [p for p in partitions if force or _fingerprint(table, p.date) != p.fingerprint]
        if todo and (widen or keyed):
            todo = every_date()
        result = TableResult(identifier, unchanged=sorted({p.date for p in partitions} - {p.date for p in todo}))
        if not todo:
            return result
        forget()  # before anything is written: a commit never leaves the state of the one before
        build = _Build(catalog, identifier, table, target_bytes, widen, whole=keyed)
        try:
            try:
                if writer is not None and not widen and not keyed:
                    build.take(writer, todo, opener, result, on_partition)
                else:
                    if keyed:
                        from apilake.tables.upsert import latest

                        build.keep = latest(identifier, todo, opener)
                    for partition in todo:
                        build.add(partition, opener, result)
                        on_partition(partition)
                if (widen or keyed) and result.failed:  # a commit that replaces every date's files: a failed one would lose its rows
                    date, reason = sorted(result.failed.items())[0]
                    why = f"widening {', '.join(sorted(widen))}" if widen else "a primary-keyed table"
                    raise TableError(f"table {identifier}: {why} rebuilds every date, but "
                                     f"{len(result.failed)} failed ({date}: {reason}); nothing was committed")  # fmt: skip
            except BaseException:
                build.discard()  # nothing written for a commit that will not happen stays in the warehouse
                raise
            committed = build.commit()
            if committed is not None:
                snapshot = committed.current_snapshot()
                result.snapshot = snapshot.snapshot_id if snapshot else None
                remember(committed)
            return result
        except Widen as more:
            widen.update(more.columns)
            log.info("table %s: widening %s: every date is rebuilt", identifier, more)
        except (CommitFailedException, ValidationException, TableAlreadyExistsError) as exc:
            build.discard()
            log.info("table %s: another process committed first (%s); reading the table again", identifier, exc)
            time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))
    raise TableError(f"table {identifier}: {ATTEMPTS} commits in a row lost to other writers; run `apilake tables` again")


def _lean_memory() -> None:
    """Arrow's buffers from jemalloc, freed pages handed back to the system after 100 ms: the
    default pool (mimalloc) keeps what earlier blocks freed (~30 MB more peak RSS over a bulk
    file); a decay of 0 saves a little more but costs ~25% more CPU in page faults.
    A pool the user chose (`ARROW_DEFAULT_MEMORY_POOL`) is left as it is."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(100)
    except NotImplementedError:  # a pyarrow built without jemalloc
        pass


def _load(catalog: Catalog, identifier: str) -> Table | None:
    try:
        return catalog.load_table(identifier)
    except NoSuchTableError:
        return None


def _fingerprint(table: Table | None, date: str) -> str | None:
    return table.properties.get(FINGERPRINT + date) if table is not None else None


class _Build:
    """One table's transaction: the data files written for its dates, then one commit. On a
    Dask worker there is no catalog: the table exists and the sender commits."""

    def __init__(self, catalog: Catalog | None, identifier: str, table: Table | None, target_bytes: int, widen: dict[str, Any], *, whole: bool = False) -> None:
        self.catalog, self.identifier, self.table = catalog, identifier, table
        self.target_bytes = target_bytes
        self.widen = widen
        self.whole = whole  # the commit replaces every data file of the table (a primary-keyed one)
        self.keep: Keep | None = None  # the rows of each raw object that are written (a primary-keyed table's latest versions)
        self.txn: Transaction | None = None
        self.files: dict[str, list[DataFile]] = {}  # date → data files written for it
        self.fingerprints: dict[str, str] = {}
        self.uuid = uuid.uuid4()
        self.counter = 0
        self.schema: Any = None  # the transaction's current schema (pyiceberg's Schema), once begun
        self.csv_types: dict[str, dict[str, pa.DataType]] = {}  # raw key → CSV columns read wider than their first block says
        self.fitting: set[tuple[pa.Schema, int]] = set()  # (batch schema, table schema id) pairs that fit as they are

    def _begin(self, schema: pa.Schema) -> Transaction:
        if self.txn is not None:
            return self.txn
        if self.table is None:
            assert self.catalog is not None, "a new table is created where the catalog is"
            namespace = self.identifier.rsplit(".", 1)[0]
            self.catalog.create_namespace_if_not_exists(namespace)
            self.txn = self.catalog.create_table_transaction(self.identifier, schema=schema, properties=TABLE_PROPERTIES)
            with self.txn.update_spec() as spec:
                spec.add_identity(DATE_COLUMN)
        else:
            self.txn = self.table.transaction()
            known = {f.name for f in self.table.schema().fields}
            if widened := {name: kind for name, kind in self.widen.items() if name in known}:  # the others are new in this build
                with self.txn.update_schema(allow_incompatible_changes=True) as update:
                    for name, kind in widened.items():
                        update.update_column(name, kind)
        self.schema = self.txn.table_metadata.schema()
        return self.txn

    def add(self, partition: Partition, opener: Opener, result: TableResult) -> None:
        """Write one date's rows; a damaged raw object leaves the date out of the commit. A CSV
        column whose type changes after the first block is read again, wider, from the start
        (each time wider: int → double → text, at most a few times a column)."""
        while True:
            try:
                return self._add(partition, opener, result)
            except Retype as wider:
                self.csv_types.setdefault(wider.key, {})[wider.column] = wider.kind
                log.info("table %s, %s: %s", self.identifier, partition.date, wider)

    def _add(self, partition: Partition, opener: Opener, result: TableResult) -> None:
        writer: _Writer | None = None
        written: list[DataFile] = []
        rows = 0
        try:
            for batch, key in _gathered(partition, opener, self.csv_types, self.keep):
                batch = self._fitted(batch, key)
                if writer is not None and writer.schema_id != self.schema.schema_id:
                    written.append(writer.close())
                    writer = None
                if writer is None:
                    writer = self._writer(partition.date)
                rows += batch.num_rows
                writer.add(batch)
                if writer.size >= self.target_bytes:
                    written.append(writer.close())
                    writer = None
            if writer is not None:
                written.append(writer.close())
                writer = None
            self._begin(_BASE)
        except TableError as exc:
            if writer is not None:
                writer.abandon()
            self._delete(written)
            result.failed[partition.date] = str(exc)
            log.error("table %s, %s: %s", self.identifier, partition.date, exc)
            return
        except BaseException:
            if writer is not None:
                writer.abandon()
            self._delete(written)
            raise
        self._built(partition, written, rows, result)

    def take(self, writer: Writer, todo: list[Partition], opener: Opener, result: TableResult, on_partition: Callable[[Partition], None]) -> None:
        """The partitions written by `writer`, taken into this commit: their schemas united with
        the commit's; one whose field ids or types then differ from the commit's is written again here."""
        txn = self._begin(_BASE)
        io = dict(txn._table.io.properties)
        outcomes = writer([PartitionWork(self.identifier, txn.table_metadata, io, p, self.target_bytes) for p in todo])
        widen: dict[str, Any] = {}
        for partition, written in zip(todo, outcomes, strict=True):
            self.files[partition.date] = written.files  # from now on `discard` removes them
            widen.update(written.widen)
        if widen:
            raise Widen(widen)
        for partition, written in zip(todo, outcomes, strict=True):
            files = self.files.pop(partition.date)
            if written.failed is not None:
                result.failed[partition.date] = written.failed
                log.error("table %s, %s: %s", self.identifier, partition.date, written.failed)
            elif self._fits(written):
                log.info(
                    "table %s, %s: %d row(s) in %d data file(s) written by process %d", self.identifier, partition.date, written.rows, len(files), written.pid
                )
                self._built(partition, files, written.rows, result)
            else:
                log.info("table %s, %s: its files do not fit the commit's columns: written again here", self.identifier, partition.date)
                self._delete(files)
                self.add(partition, opener, result)
            on_partition(partition)

    def _fits(self, written: Written) -> bool:
        """Unite the written schema's columns with the commit's; whether the files' field ids
        then name the same columns of the same types."""
        from pyiceberg.io.pyarrow import schema_to_pyarrow

        if written.schema is None:
            return True
        if _grows(schema_to_pyarrow(written.schema, include_field_ids=False), self.schema):
            try:
                with self._begin(_BASE).update_schema() as update:
                    update.union_by_name(written.schema)
            except (ValueError, ValidationError):  # a type this commit cannot take as it is
                return False
            self.schema = self._begin(_BASE).table_metadata.schema()
        ours = index_by_id(self.schema)
        return all(i in ours and ours[i].name == f.name and ours[i].field_type == f.field_type for i, f in index_by_id(written.schema).items())

    def _built(self, partition: Partition, files: list[DataFile], rows: int, result: TableResult) -> None:
        self.files[partition.date] = files
        self.fingerprints[partition.date] = partition.fingerprint
        result.built.append(partition.date)
        result.rows += rows
        result.files += len(files)
        result.bytes += sum(f.file_size_in_bytes for f in files)

    def _fitted(self, batch: pa.RecordBatch, key: str) -> pa.RecordBatch:
        """The batch cast to the table's types, and the table's schema grown by its new columns.
        What depends only on the batch's Arrow schema and the table's schema is worked out once
        per pair (`fit`'s types, `_grows`): a transaction's metadata is costly to rebuild."""
        if self.widen:
            batch = cast_to(batch, self.widen)
        txn = self._begin(batch.schema)
        batch = fit(batch, self.schema, table=self.identifier, key=key)
        known = (batch.schema, self.schema.schema_id)
        if known not in self.fitting and _grows(batch.schema, self.schema):
            try:
                with txn.update_schema() as update:
                    update.union_by_name(batch.schema)
            except (ValueError, ValidationError) as exc:  # a nested field whose type changed, say
                raise TableError(f"table {self.identifier}: {key} does not fit the table's columns: {exc}") from None
            self.schema = txn.table_metadata.schema()
        self.fitting.add((batch.schema, self.schema.schema_id))
        return batch

    def _writer(self, date: str) -> _Writer:
        self.counter += 1
        return _Writer(self._begin(_BASE), self.schema, date, f"{self.uuid}-{self.counter:05d}.parquet")

    def commit(self) -> Table | None:
        """One snapshot: the built dates' old files out, their new files in, their fingerprints
        set. The committed table, or None when no date was built."""
        if not self.fingerprints:
            return None
        txn = self._begin(_BASE)
        dates = sorted(self.fingerprints)
        old = self._old_files(dates)
        summary = {"apilake.dates": ",".join(dates) if len(dates) <= 20 else f"{dates[0]}..{dates[-1]} ({len(dates)})"}
        with txn.update_snapshot(snapshot_properties=summary).overwrite() as producer:
            for data_file in old:
                producer.delete_data_file(data_file)
            for files in self.files.values():
                for data_file in files:
                    producer.append_data_file(data_file)
        txn.set_properties({FINGERPRINT + date: fp for date, fp in self.fingerprints.items()})
        return txn.commit_transaction()

    def _old_files(self, dates: list[str]) -> list[DataFile]:
        if self.table is None or self.table.current_snapshot() is None:
            return []
        rebuilt = [dt.date.fromisoformat(d) for d in dates] if not (self.widen or self.whole) else None
        scan = self.table.scan() if rebuilt is None else self.table.scan(row_filter=In(term=DATE_COLUMN, literals=rebuilt))
        return [task.file for task in scan.plan_files()]

    def discard(self) -> None:
        """Remove every file written for a commit that will not happen."""
        for files in self.files.values():
            self._delete(files)
        self.files.clear()

    def _delete(self, files: list[DataFile]) -> None:
        io = self.txn._table.io if self.txn is not None else None
        for data_file in files:
            try:
                if io is not None:
                    io.delete(data_file.file_path)
            except OSError as exc:
                log.warning("cannot remove %s: %s", data_file.file_path, exc)


def write_partition(work: PartitionWork, opener: Opener) -> Written:
    """Write one partition's data files into the table's warehouse, for a commit made by the
    process that sent `work` (a Dask worker's task). Files of a failed partition are removed."""
    _lean_memory()
    metadata = work.metadata
    namespace, name = work.identifier.rsplit(".", 1)
    table = Table((namespace, name), metadata, "", load_file_io(work.io_properties, metadata.location), NoopCatalog("apilake"))
    known = {f.name for f in metadata.schema().fields}
    date = work.partition.date
    widen: dict[str, Any] = {}
    while True:  # each time a column wider: int → double → text at most
        build = _Build(None, work.identifier, table, work.target_bytes, widen)
        result = TableResult(work.identifier)
        try:
            build.add(work.partition, opener, result)
        except Widen as more:
            if known.intersection(more.columns):  # the table's own column: every date is rebuilt, by the committer
                return Written(date, widen=more.columns, pid=os.getpid())
            widen.update(more.columns)  # a column new in this partition: written again here, wider
            continue
        return Written(date, build.files.get(date, []), build.schema, result.rows, result.failed.get(date), pid=os.getpid())


def _gathered(
    partition: Partition, opener: Opener, csv_types: dict[str, dict[str, pa.DataType]], keep: Keep | None = None
) -> Iterator[tuple[pa.RecordBatch, str]]:
    """A partition's rows, consecutive batches of one Arrow schema (a JSON endpoint's pages,
    mostly) joined into batches of about `GATHER_ROWS` (a big batch passes as it is): the schema work and the conversion to
    the table's field ids are paid per batch, not per page. Each batch comes with the key of its
    first raw object, which holds every column type of the batch (named in a schema error).
    `keep` cuts each object's batches to the rows to write."""
    pending: list[pa.RecordBatch] = []
    rows, key = 0, ""
    for obj in partition.objects:
        with opener(obj, partition.date) as stream:
            offset = 0
            for batch in record_batches(obj, partition.date, stream, csv_types.get(obj.key)):
                offset += batch.num_rows
                if keep is not None and not (batch := keep(obj, batch, offset - batch.num_rows)).num_rows:
                    continue
                if pending and (rows >= GATHER_ROWS or batch.num_rows >= GATHER_ROWS // 16 or batch.schema != pending[0].schema):
                    yield _joined(pending), key
                    pending, rows = [], 0
                if batch.num_rows >= GATHER_ROWS // 16:  # a CSV block: big enough as it is, not copied
                    yield batch, obj.key
                    continue
                if not pending:
                    key = obj.key
                pending.append(batch)
                rows += batch.num_rows
    if pending:
        yield _joined(pending), key


def _joined(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    joined = pa.Table.from_batches(batches).combine_chunks().to_batches()
    return joined[0] if joined else batches[0]  # batches of no rows join to none


_BASE = pa.schema([(DATE_COLUMN, pa.date32()), (OBJECT_COLUMN, pa.string()), (RUN_COLUMN, pa.string())])


def _grows(arrow: pa.Schema, schema: Any) -> bool:
    """Whether a batch has a column the table lacks, or a nested column of another shape."""
    from pyiceberg.io.pyarrow import schema_to_pyarrow

    ours = schema_to_pyarrow(schema, include_field_ids=False)
    for f in arrow:
        if f.name not in ours.names:
            return True
        if pa.types.is_nested(f.type) and str(ours.field(f.name).type).replace("large_", "") != str(f.type).replace("large_", ""):
            return True
    return False


_PARQUET = FileFormatFactory.get(FileFormat.PARQUET)


class _Writer:
    """One Parquet data file of one date, written batch by batch, rows buffered into row groups."""

    def __init__(self, txn: Transaction, schema: Any, date: str, name: str) -> None:
        metadata = txn.table_metadata
        self.schema = schema
        self.file_schemas: dict[pa.Schema, Any] = {}  # a batch's Arrow schema → its Iceberg schema, with the table's field ids
        self.schema_id = self.schema.schema_id
        self.spec = metadata.spec()
        self.properties = metadata.properties
        self.io = txn._table.io
        value = dt.date.fromisoformat(date)
        self.key = PartitionKey([PartitionFieldValue(self.spec.fields[0], value)], self.spec, self.schema)
        provider = load_location_provider(table_location=metadata.location, table_properties=metadata.properties)
        self.path = provider.new_data_location(data_file_name=name, partition_key=self.key)
        self.stream = self.io.new_output(self.path).create(overwrite=True)
        self.writer: pq.ParquetWriter | None = None
        self.buffer: list[pa.RecordBatch] = []
        self.buffered = 0

    @property
    def size(self) -> int:
        return self.stream.tell()

    def add(self, batch: pa.RecordBatch) -> None:
        file_schema = self.file_schemas.get(batch.schema)
        if file_schema is None:
            file_schema = self.file_schemas[batch.schema] = pyarrow_to_schema(batch.schema, name_mapping=self.schema.name_mapping)
        self.buffer.append(_to_requested_schema(self.schema, file_schema, batch, include_field_ids=True, format_model=_PARQUET))
        self.buffered += batch.num_rows
        if self.buffered >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self.buffer:
            return
        data = pa.Table.from_batches(self.buffer)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.stream, schema=data.schema, store_decimal_as_integer=True, **_get_parquet_writer_kwargs(self.properties))
        self.writer.write_table(data, row_group_size=max(ROW_GROUP_ROWS, data.num_rows))
        self.buffer, self.buffered = [], 0

    def close(self) -> DataFile:
        self._flush()
        if self.writer is None:  # cannot happen: a writer is made for a batch
            raise TableError(f"{self.path}: no rows were written")
        self.writer.close()
        size = self.stream.tell()
        self.stream.close()
        stats = data_file_statistics_from_parquet_metadata(
            parquet_metadata=self.writer.writer.metadata,
            stats_columns=compute_statistics_plan(self.schema, self.properties),
            parquet_column_mapping=parquet_path_to_id_mapping(self.schema),
        )
        return DataFile.from_args(
            content=DataFileContent.DATA,
            file_path=self.path,
            file_format=FileFormat.PARQUET,
            partition=self.key.partition,
            file_size_in_bytes=size,
            sort_order_id=None,
            spec_id=self.spec.spec_id,
            equality_ids=None,
            key_metadata=None,
            **stats.to_serialized_dict(),
        )

    def abandon(self) -> None:
        try:
            if self.writer is not None:
                self.writer.close()
            self.stream.close()
            self.io.delete(self.path)
        except OSError as exc:
            log.warning("cannot remove %s: %s", self.path, exc)
