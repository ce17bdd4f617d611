"""`apilake query`: DuckDB SQL over the job's tables, addressed as `namespace.table`.

Each table is a view over exactly its current snapshot's data files (pyiceberg plans them from
the catalog), so a query never sees a file of an older or an unfinished commit. Local files are
read by DuckDB's `read_parquet`; files on object storage are streamed by pyiceberg.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from apilake.errors import TableError
from apilake.jobfile import Job
from apilake.summary import table as text_table


def connect(job: Job, destination: str) -> Any:
    """A DuckDB connection with a schema per namespace and a view per table of the job."""
    import duckdb

    from apilake.tables.catalog import open_catalog
    from apilake.tables.plan import namespace

    catalog = open_catalog(job, destination)
    con = duckdb.connect()
    for ns in sorted({namespace(job, s) for s in job.sources}):
        try:
            identifiers = catalog.list_tables(ns)
        except Exception:  # noqa: BLE001 - pyiceberg's NoSuchNamespaceError: nothing built there yet
            continue
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{ns}"')
        for identifier in identifiers:
            _view(con, ns, identifier[-1], catalog.load_table(identifier))
    return con


def _view(con: Any, ns: str, name: str, iceberg: Any) -> None:
    files = [task.file.file_path for task in iceberg.scan().plan_files()]
    view = f'"{ns}"."{name}"'
    if files and all(f.startswith("file://") or f.startswith("/") for f in files):
        paths = ", ".join("'" + f.removeprefix("file://").replace("'", "''") + "'" for f in files)
        con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet([{paths}], union_by_name = true)")
        return
    reader = iceberg.scan().to_arrow_batch_reader() if files else iceberg.schema().as_arrow().empty_table()
    relation = f"__{ns}__{name}"
    con.register(relation, reader)
    con.execute(f'CREATE VIEW {view} AS SELECT * FROM "{relation}"')


def run_query(job: Job, destination: str, sql: str, fmt: str) -> str:
    """The query's answer as text: an aligned table, CSV with a header, or a JSON array of rows."""
    import duckdb

    con = connect(job, destination)
    try:
        cursor = con.execute(sql)
    except duckdb.Error as exc:
        raise TableError(f"query failed: {exc}") from None
    names = [d[0] for d in cursor.description or []]
    rows = cursor.fetchall()
    if fmt == "json":
        return json.dumps([dict(zip(names, row, strict=True)) for row in rows], default=str, ensure_ascii=False, indent=1)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    cells = [names] + [["" if v is None else str(v) for v in row] for row in rows]
    return (text_table(cells) if names else "") + f"\n({len(rows)} row{'s' if len(rows) != 1 else ''})"
