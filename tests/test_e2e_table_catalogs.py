"""End to end: the tables in real shared catalogs, through the CLI.

pyiceberg's SQL catalog on a PostgreSQL server for a local lake, and an S3 lake on moto with its
tables in AWS Glue (moto's) and their files in S3 (moto's): land with `apilake run`, query with
`apilake query`, compare with the raw objects that landed; a rerun leaves the counts as they were.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import sqlalchemy

from apilake.emulator import Emulator
from conftest import HISTORY_TABLE as HISTORY
from conftest import TOKEN, all_text, bulk_endpoint, lake_objects, run_cli, write_job
from moto_server import s3

DATE = "2026-11-25"
BULK = bulk_endpoint("app_downloads", files="metrics", table={"name": "bulk_{file_kind}"})
# One `apilake query` each (each opens the catalog: seconds of CPU), both tables in one statement.
ROWS = "SELECT date, country, device, _apilake_object, _date, (SELECT count(*) FROM dataai.bulk_metrics) AS bulk_rows FROM dataai.history"
COUNTS = "SELECT _date, count(*) AS n, (SELECT count(*) FROM dataai.bulk_metrics) AS bulk_rows FROM dataai.history GROUP BY 1 ORDER BY 1"


def query(job: Path, sql: str) -> list[dict[str, Any]]:
    result = run_cli("query", str(job), sql, "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def history_rows(objects: dict[str, bytes]) -> list[tuple[str, str, str]]:
    """(date, country, device) of every record in the raw pages: the table holds each once."""
    return sorted((r["date"], r["country"], r["device"]) for k, v in objects.items() if "/history/" in k for r in json.loads(v)["list"])


def csv_lines(objects: dict[str, bytes]) -> int:
    return sum(len(gzip.decompress(v).decode().splitlines()) - 1 for k, v in objects.items() if "/bulk_daily/" in k)


def check_tables(job: Path, objects: dict[str, bytes]) -> None:
    """Every raw record in its table once, and a rerun (nothing lands) and `apilake tables`
    (nothing changed) leave the counts as they were."""
    rows = query(job, ROWS)
    assert sorted((r["date"], r["country"], r["device"]) for r in rows) == history_rows(objects)
    assert {r["_apilake_object"] for r in rows} == {k for k in objects if "/history/" in k}
    assert rows and {r["bulk_rows"] for r in rows} == {csv_lines(objects)}
    assert run_cli("run", str(job), "--date", DATE).returncode == 0
    again = run_cli("tables", str(job))
    assert again.returncode == 0 and "unchanged" in again.stdout, again.stdout + again.stderr
    after = query(job, COUNTS)
    assert [(r["_date"], r["n"]) for r in after] == sorted(Counter(r["_date"] for r in rows).items())
    assert {r["bulk_rows"] for r in after} == {csv_lines(objects)}


def test_sql_catalog_on_postgres_for_a_local_lake(tmp_path: Path, emulator: Emulator, postgres_uri: str) -> None:
    emulator.config.file_size = 4096
    warehouse = (tmp_path / "warehouse").as_uri()
    job = write_job(tmp_path, emulator, [HISTORY, BULK], tables={"catalog": {"type": "sql", "uri": postgres_uri}, "warehouse": warehouse})
    lake = tmp_path / "lake"
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dataai.history" in result.stdout and "dataai.bulk_metrics" in result.stdout
    check_tables(job, lake_objects(lake))

    engine = sqlalchemy.create_engine(postgres_uri)
    try:
        with engine.connect() as connection:
            tables = connection.execute(sqlalchemy.text("SELECT table_namespace, table_name, metadata_location FROM iceberg_tables")).all()
    finally:
        engine.dispose()
    assert sorted((ns, name) for ns, name, _ in tables) == [("dataai", "bulk_metrics"), ("dataai", "history")]
    assert all(location.startswith(warehouse) for _, _, location in tables)
    own = lake / "_apilake" / "tables"  # no SQLite catalog nor warehouse beside the shared one (only the refresh state)
    assert not (own / "catalog.db").exists() and not (own / "warehouse").exists()
    assert sorted(p.name for p in (own / "state").iterdir()) == ["dataai.bulk_metrics.json", "dataai.history.json"]
    assert TOKEN not in all_text(lake, result)


def bucket_objects(endpoint: str, bucket: str, prefix: str = "") -> dict[str, bytes]:
    client = s3(endpoint)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"][len(prefix) :]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for page in pages for o in page.get("Contents", [])}


def test_s3_lake_with_glue_catalog_on_moto(tmp_path: Path, emulator: Emulator, bucket: str, glue_catalog_properties: dict[str, str]) -> None:
    emulator.config.file_size = 4096
    catalog = {k: v for k, v in glue_catalog_properties.items() if not k.startswith("client.") or k == "client.region"}  # keys: the AWS chain
    job = write_job(
        tmp_path, emulator, [HISTORY, BULK], destination="s3://lake/raw", s3={"endpoint_url": bucket, "part_size_mb": 5}, tables={"catalog": catalog}
    )
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dataai.history" in result.stdout and "dataai.bulk_metrics" in result.stdout
    raw = {k: v for k, v in bucket_objects(bucket, "lake", "raw/").items() if not k.startswith("_apilake/")}
    check_tables(job, raw)

    glue = boto3.client("glue", endpoint_url=bucket, region_name="us-east-1")
    names = sorted(t["Name"] for t in glue.get_tables(DatabaseName="dataai")["TableList"])
    assert names == ["bulk_metrics", "history"]
    warehouse = bucket_objects(bucket, "warehouse")
    assert any(k.endswith(".parquet") for k in warehouse) and any(k.endswith(".metadata.json") for k in warehouse)
    own = [k for k in bucket_objects(bucket, "lake", "raw/") if k.startswith("_apilake/tables/")]
    assert sorted(own) == ["_apilake/tables/state/dataai.bulk_metrics.json", "_apilake/tables/state/dataai.history.json"]  # data in the warehouse only
    assert TOKEN not in result.stdout + result.stderr


def test_s3_lake_without_a_catalog_is_refused_before_anything_lands(tmp_path: Path, emulator: Emulator, bucket: str) -> None:
    job = write_job(tmp_path, emulator, [HISTORY], destination="s3://lake/raw", s3={"endpoint_url": bucket}, tables={})
    for command in (["run", str(job), "--date", DATE], ["tables", str(job)]):
        result = run_cli(*command)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "tables.catalog: an S3 lake (s3://lake/raw) needs a shared catalog" in result.stderr
        assert "type: glue" in result.stderr and "type: sql" in result.stderr and "Traceback" not in result.stderr
    assert bucket_objects(bucket, "lake") == {}  # no object landed, no run record: nothing to undo
