"""The real catalogs the table tests use work with pyiceberg: its SQL catalog on a PostgreSQL
server, and its Glue catalog on moto's server with the tables' files in S3 on moto."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import sqlalchemy
from pyiceberg.catalog import load_catalog

from moto_server import s3
from postgres_server import PostgresServer

ROWS = pa.table(
    {
        "id": pa.array([1, 2, 3], pa.int64()),
        "name": pa.array(["a", "b", None], pa.string()),
        "_date": pa.array([datetime.date(2024, 5, 1)] * 2 + [datetime.date(2024, 5, 2)], pa.date32()),
    }
)


def round_trip(properties: dict[str, Any]) -> list[dict[str, Any]]:
    """Create a namespace and a table partitioned by `_date`, append ROWS, and read them back
    through a second catalog opened from the same properties (the state is in the catalog)."""
    catalog = load_catalog("apilake", **properties)
    catalog.create_namespace("dataai")
    table = catalog.create_table("dataai.metrics", schema=ROWS.schema)
    with table.update_spec() as spec:
        spec.add_identity("_date")
    table.append(ROWS)
    reread = load_catalog("apilake", **properties).load_table("dataai.metrics")
    assert [str(field) for field in reread.spec().fields] == ["1000: _date: identity(3)"]
    return reread.scan().to_arrow().sort_by("id").to_pylist()


def test_sql_catalog_on_postgres(postgres_uri: str, tmp_path: Path) -> None:
    properties = {"type": "sql", "uri": postgres_uri, "warehouse": (tmp_path / "warehouse").as_uri()}
    assert round_trip(properties) == ROWS.to_pylist()
    engine = sqlalchemy.create_engine(postgres_uri)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sqlalchemy.text("SELECT table_namespace, table_name FROM iceberg_tables")).all()
    finally:
        engine.dispose()
    assert rows == [("dataai", "metrics")]


def test_glue_catalog_on_moto(glue_catalog_properties: dict[str, str]) -> None:
    assert round_trip(glue_catalog_properties) == ROWS.to_pylist()
    glue = boto3.client("glue", endpoint_url=glue_catalog_properties["glue.endpoint"], region_name="us-east-1")
    table = glue.get_table(DatabaseName="dataai", Name="metrics")["Table"]
    assert table["Parameters"]["table_type"] == "ICEBERG"
    keys = [item["Key"] for item in s3(glue_catalog_properties["s3.endpoint"]).list_objects_v2(Bucket="warehouse")["Contents"]]
    assert table["Parameters"]["metadata_location"].removeprefix("s3://warehouse/") in keys
    assert sum(key.endswith(".parquet") for key in keys) == 2  # one data file per date


def test_postgres_server_stops_and_removes_its_folder() -> None:
    server = PostgresServer().start()
    pid, folder = server.pid, server.folder
    assert pid is not None and folder is not None
    assert Path(f"/proc/{pid}").exists() and (folder / "data" / "PG_VERSION").exists()
    server.stop()
    assert not Path(f"/proc/{pid}").exists()  # stopped and reaped, not a zombie
    assert not folder.exists()
    assert not any(_runs_in(folder, proc) for proc in Path("/proc").glob("[0-9]*"))


def _runs_in(folder: Path, proc: Path) -> bool:
    """Whether the process works in the folder (a postmaster and its backends work in the data folder)."""
    try:
        return os.readlink(proc / "cwd").startswith(str(folder))
    except OSError:
        return False
