"""End to end: the landed data as Iceberg tables (SQLite catalog in the lake), through the CLI.

Every landed record is in its table exactly once (ids compared with the raw pages), with the
unit's values and lineage; reruns never duplicate; a re-landed date is replaced in one snapshot;
bad raw objects fail only their date; DuckDB, pyiceberg and a second process read the same rows.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from apilake.emulator import Emulator
from conftest import TOKEN, all_text, lake_objects, run_cli, start_cli, write_job

DATE = "2026-11-25"
ACME_ENV = {"ACME_SECRET": "acme-secret-a1b2c3d4"}
HISTORY = {
    "name": "history",
    "kind": "json",
    "path": "/v1.3/intelligence/apps/{market}/app/{product_id}/history",
    "matrix": {"market": ["ios", "google-play"], "product_id": [7]},
    "paginate": "next_page",
    "params": {"start_date": "{date}", "end_date": "{date}", "countries": "US+FR+DE", "page_size": 4},
    "table": {"records": "list"},
}
BULK = {
    "name": "bulk_daily",
    "kind": "bulk",
    "path": "/v2/bulk/get-bulk-urls",
    "table": {"name": "bulk_{file_kind}_{dimension}"},
    "params": {"metric_bundles": "usage", "country_codes": "all", "granularity": "daily", "start_date": "{date}", "end_date": "{date}"},
}


def catalog(lake: Path) -> Any:
    from pyiceberg.catalog import load_catalog

    root = lake / "_apilake" / "tables"
    return load_catalog("apilake", type="sql", uri=f"sqlite:///{root}/catalog.db", warehouse=f"file://{root}/warehouse")


def query(job: Path, sql: str) -> list[dict[str, Any]]:
    """`apilake query` in its own process: DuckDB over the tables' current snapshots."""
    result = run_cli("query", str(job), sql, "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def read(lake: Path, name: str) -> list[dict[str, Any]]:
    """A table's rows as pyiceberg reads them, in this process (where the CLI query is not what a test is about)."""
    return catalog(lake).load_table(name).scan().to_arrow().to_pylist()


def per_date(lake: Path, name: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in read(lake, name):
        counts[row["_date"].isoformat()] = counts.get(row["_date"].isoformat(), 0) + 1
    return counts


def history_rows(lake: Path) -> list[tuple[str, str, str, str]]:
    """(market, date, country, device) of every record in the raw pages: what the table must hold, once each."""
    rows = []
    for key, body in lake_objects(lake).items():
        if "/history/" in key:
            market = key.split("market=")[1].split(",")[0]
            rows += [(market, r["date"], r["country"], r["device"]) for r in json.loads(body)["list"]]
    return sorted(rows)


def test_every_landed_record_is_in_its_table_once_with_unit_values_and_lineage(tmp_path: Path, emulator: Emulator) -> None:
    job = write_job(tmp_path, emulator, [HISTORY, BULK], tables={})
    lake = tmp_path / "lake"
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dataai.history" in result.stdout and "dataai.bulk_metrics" in result.stdout
    assert len([k for k in lake_objects(lake) if "/history/" in k]) == 3  # ios: two pages, google-play: one; pages are not rows

    rows = query(job, "SELECT market, date, country, device, _date, product_id, _apilake_object, _apilake_run_id FROM dataai.history")
    assert rows, "the DuckDB view reads the table"
    assert sorted((r["market"], r["date"], r["country"], r["device"]) for r in rows) == history_rows(lake)
    run_id = json.loads(next((lake / "_apilake" / "runs").glob("*.json")).read_text())["run_id"]
    for row in rows:
        assert row["_date"] == DATE and row["product_id"] == "7" and row["_apilake_run_id"] == run_id
        assert row["_apilake_object"] in lake_objects(lake) and f"market={row['market']}" in row["_apilake_object"]

    # bulk: one metrics table, one table per dimension; every CSV line once
    metrics = [(k, gzip.decompress(v).decode().splitlines()[1:]) for k, v in lake_objects(lake).items() if "/metrics/" in k]
    counted = read(lake, "dataai.bulk_metrics")
    assert (len(counted), len({r["_apilake_object"] for r in counted})) == (sum(len(lines) for _, lines in metrics), len(metrics))
    names = {t[-1] for t in catalog(lake).list_tables("dataai")}
    assert names == {"history", "bulk_metrics", "bulk_dimensions_product_id", "bulk_dimensions_company_id"}

    # pyiceberg in this process reads the same rows as DuckDB in `apilake query`'s
    table = catalog(lake).load_table("dataai.history")
    arrow = table.scan().to_arrow()
    assert sorted(
        zip(arrow["market"].to_pylist(), arrow["date"].to_pylist(), arrow["country"].to_pylist(), arrow["device"].to_pylist(), strict=True)
    ) == history_rows(lake)
    files = table.inspect.files()
    assert all(codec == "ZSTD" for codec in _codecs(files["file_path"].to_pylist()))
    assert TOKEN not in all_text(lake, result)


def _codecs(paths: list[str]) -> list[str]:
    import pyarrow.parquet as pq

    return [pq.ParquetFile(p.removeprefix("file://")).metadata.row_group(0).column(0).compression for p in paths]


def snapshots(lake: Path, name: str) -> int:
    return len(catalog(lake).load_table(name).snapshots())


def test_reruns_never_duplicate_and_a_relanded_date_is_replaced_in_one_snapshot(tmp_path: Path, emulator: Emulator) -> None:
    job = write_job(tmp_path, emulator, [HISTORY], tables={})
    lake = tmp_path / "lake"
    assert run_cli("run", str(job), "--from", "2026-11-24", "--to", DATE).returncode == 0
    before = per_date(lake, "dataai.history")
    assert sorted(before) == ["2026-11-24", DATE]
    assert snapshots(lake, "dataai.history") == 1  # two dates, one commit

    assert run_cli("run", str(job), "--from", "2026-11-24", "--to", DATE).returncode == 0  # nothing lands
    assert run_cli("run", str(job), "--date", DATE, "--force").returncode == 0  # the same bytes land again
    again = run_cli("tables", str(job))
    assert again.returncode == 0 and "unchanged" in again.stdout
    assert per_date(lake, "dataai.history") == before
    assert snapshots(lake, "dataai.history") == 1  # unchanged raw objects: no new snapshot

    history_more = {**HISTORY, "params": {**HISTORY["params"], "countries": "US+FR+DE+JP"}}  # the vendor now serves more
    job = write_job(tmp_path, emulator, [history_more], tables={})
    assert run_cli("run", str(job), "--date", DATE, "--force").returncode == 0
    after = per_date(lake, "dataai.history")
    assert after["2026-11-24"] == before["2026-11-24"] and after[DATE] == before[DATE] * 4 // 3
    assert snapshots(lake, "dataai.history") == 2  # the re-landed date replaced in one snapshot
    assert sorted((r["market"], r["date"], r["country"], r["device"]) for r in read(lake, "dataai.history")) == history_rows(lake)

    forced = run_cli("tables", str(job), "--force")
    assert forced.returncode == 0
    assert per_date(lake, "dataai.history") == after
    assert snapshots(lake, "dataai.history") == 3


def test_schema_evolution_adds_columns_widens_types_and_refuses_an_incompatible_change(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    pages = {"2026-11-23": [{"id": 1, "n": 1}], "2026-11-24": [{"id": 2, "n": 2, "tag": "new"}], DATE: [{"id": 3, "n": 2.5}]}
    job = _local_json_job(tmp_path, pages)
    result = run_cli("tables", str(job))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = sorted(({k: r[k] for k in ("id", "n", "tag")} for r in read(lake, "acme.items")), key=lambda r: r["id"])
    assert rows == [{"id": 1, "n": 1.0, "tag": None}, {"id": 2, "n": 2.0, "tag": "new"}, {"id": 3, "n": 2.5, "tag": None}]
    assert str(catalog(lake).load_table("acme.items").schema().find_field("n").field_type) == "double"

    _land(lake, "2026-11-26", [{"id": 4, "n": {"a": 1}}])
    bad = run_cli("tables", str(job))
    assert bad.returncode == 1
    assert "acme.items" in bad.stdout and "'n'" in bad.stdout and "double" in bad.stdout and "acme/items/dt=2026-11-26/data.json" in bad.stdout
    assert "Traceback" not in bad.stderr
    assert sorted(r["id"] for r in read(lake, "acme.items")) == [1, 2, 3]


def _land(lake: Path, date: str, body: Any, name: str = "data.json", raw: bytes | None = None) -> None:
    """Put an object in the lake with a run record saying it landed, as a run would."""
    import hashlib

    key = f"acme/items/dt={date}/{name}"
    data = raw if raw is not None else json.dumps(body).encode()
    (lake / key).parent.mkdir(parents=True, exist_ok=True)
    (lake / key).write_bytes(data)
    runs = lake / "_apilake" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    run_id = f"20261126T0000{len(list(runs.iterdir())):02d}.000000Z-abcdef"
    unit = {
        "unit": f"acme/items/{date}",
        "source": "acme",
        "endpoint": "items",
        "date": date,
        "kind": "json",
        "status": "landed",
        "objects": [{"key": key, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}],
    }
    (runs / f"{run_id}.json").write_text(json.dumps({"run_id": run_id, "status": "succeeded", "units": [unit]}))


def _local_json_job(tmp_path: Path, pages: dict[str, Any], table: dict[str, Any] | None = None) -> Path:
    lake = tmp_path / "lake"
    for date, body in pages.items():
        _land(lake, date, body)
    job = {
        "destination": str(lake),
        "tables": {},
        "sources": [
            {
                "name": "acme",
                "base_url": "http://127.0.0.1:9",
                "endpoints": [{"name": "items", "kind": "json", "path": "/items", **({"table": table} if table else {})}],
            }
        ],
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.mark.parametrize(
    "damage, says",
    [
        ("json", "not JSON"),
        ("missing", "raw zone incomplete"),
        ("scalar", "finds a int"),
    ],
)
def test_a_bad_raw_object_fails_only_its_date_and_leaves_the_partition_as_it_was(tmp_path: Path, damage: str, says: str) -> None:
    lake = tmp_path / "lake"
    job = _local_json_job(tmp_path, {"2026-11-24": {"rows": [{"id": 1}]}, DATE: {"rows": [{"id": 2}]}}, table={"records": "rows"})
    assert run_cli("tables", str(job)).returncode == 0
    key = lake / f"acme/items/dt={DATE}/data.json"
    if damage == "json":
        _land(lake, DATE, None, raw=b'{"rows": [{"id": 3},')
    elif damage == "missing":
        _land(lake, DATE, {"rows": [{"id": 3}]})
        key.unlink()
    else:
        _land(lake, DATE, {"rows": 5})
    _land(lake, "2026-11-23", {"rows": [{"id": 0}]})  # another date goes on
    result = run_cli("tables", str(job))
    assert result.returncode == 1
    assert says in result.stdout and f"dt={DATE}/data.json" in result.stdout and "Traceback" not in result.stderr
    assert sorted(r["id"] for r in read(lake, "acme.items")) == [0, 1, 2]


def test_records_path_finding_nothing_is_zero_rows_not_an_error(tmp_path: Path) -> None:
    job = _local_json_job(tmp_path, {DATE: {"rows": None}, "2026-11-24": {"rows": [{"id": 1}]}}, table={"records": "rows"})
    result = run_cli("tables", str(job))
    assert result.returncode == 0, result.stdout + result.stderr
    assert per_date(tmp_path / "lake", "acme.items") == {"2026-11-24": 1}


def test_acme_csv_files_ragged_lines_and_broken_gzip(tmp_path: Path, emulator: Emulator) -> None:
    from test_e2e_vendors import acme_job, report

    endpoints = [
        {"name": "csv", "kind": "file", "path": "/export.csv", "params": {"date": "{date}"}},
        {"name": "gz", "kind": "file", "path": "/export.csv.gz", "params": {"date": "{date}"}},
        report(),
    ]
    job = acme_job(tmp_path, emulator, endpoints, top={"tables": {}})
    result = run_cli("run", str(job), "--date", DATE, env=ACME_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    lake = tmp_path / "lake"
    for name in ("csv", "gz"):
        rows = read(lake, f"acme.{name}")
        assert (len(rows), len({r["row"] for r in rows}), {r["_date"].isoformat() for r in rows}) == (50, 50, {DATE})
    lines = sum(len(gzip.decompress(v).decode().splitlines()) - 1 for k, v in lake_objects(lake).items() if "/installs/" in k)
    assert len(read(lake, "acme.installs")) == lines

    (lake / f"acme/csv/dt={DATE}/data.csv").write_bytes(b"")  # stand-ins of the same size, damaged
    raw = (lake / f"acme/gz/dt={DATE}/data.csv.gz").read_bytes()
    (lake / f"acme/gz/dt={DATE}/data.csv.gz").write_bytes(raw[:10] + b"\0" * (len(raw) - 10))
    original = gzip.decompress(raw)
    ragged = original.replace(b"\n", b",extra\n", 3)[: len(original)]
    _relanded(lake, f"acme/csv/dt={DATE}/data.csv", ragged)
    result = run_cli("tables", str(job), "--force", "--only", "csv", "--only", "gz")
    assert result.returncode == 1
    assert re.search(r"data\.csv: cannot read it as CSV: CSV parse error: (Row #\d+: )?Expected 4 columns, got 3", result.stdout), result.stdout
    assert "data.csv.gz" in result.stdout
    for name in ("csv", "gz"):
        assert len(read(lake, f"acme.{name}")) == 50  # left as it was


def _relanded(lake: Path, key: str, data: bytes) -> None:
    (lake / key).write_bytes(data)
    for path in (lake / "_apilake" / "runs").glob("*.json"):
        record = json.loads(path.read_text())
        for unit in record["units"]:
            for obj in unit.get("objects") or []:
                if obj["key"] == key:
                    obj["bytes"], obj["sha256"], obj["checksum"] = len(data), "changed", None
        path.write_text(json.dumps(record))


def test_two_builders_of_one_table_both_finish_and_rows_stay_once(tmp_path: Path) -> None:
    pages = {f"2026-11-{d:02d}": {"rows": [{"id": d, "i": i} for i in range(50)]} for d in range(20, 26)}
    job = _local_json_job(tmp_path, pages, table={"records": "rows"})
    twin = tmp_path / "twin.yaml"  # another job file: its own lock, as on another host
    shutil.copy(job, twin)
    first, second = start_cli("tables", str(job)), start_cli("tables", str(twin))
    outs = [p.communicate(timeout=120) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    counts = per_date(tmp_path / "lake", "acme.items")
    assert counts == {date: 50 for date in pages}


def test_job_file_and_catalog_errors_are_clear(tmp_path: Path) -> None:
    job = {
        "destination": "s3://bucket/lake",
        "tables": {},
        "sources": [{"name": "acme", "base_url": "http://127.0.0.1:9", "endpoints": [{"name": "items", "kind": "json", "path": "/items"}]}],
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    result = run_cli("query", str(path), "SELECT 1")
    assert result.returncode == 2 and "needs a shared catalog" in result.stderr and "type: glue" in result.stderr
    job["destination"] = str(tmp_path / "lake")
    del job["tables"]
    job["sources"][0]["endpoints"][0]["table"] = {"records": "data"}
    path.write_text(yaml.safe_dump(job))
    result = run_cli("validate", str(path))
    assert result.returncode == 2 and "top-level `tables:`" in result.stderr and "Traceback" not in result.stderr


def test_a_refresh_that_changes_nothing_opens_no_catalog_and_another_writers_commit_is_seen(tmp_path: Path) -> None:
    from conftest import APILAKE

    lake = tmp_path / "lake"
    job = _local_json_job(tmp_path, {"2026-11-24": [{"id": 1}], DATE: [{"id": 2}]})
    assert run_cli("tables", str(job)).returncode == 0
    noop = subprocess.run([sys.executable, "-X", "importtime", APILAKE, "tables", str(job)], capture_output=True, text=True, timeout=60)
    assert noop.returncode == 0 and "unchanged" in noop.stdout, noop.stdout + noop.stderr[-2000:]
    assert "pyiceberg" not in noop.stderr and "sqlalchemy" not in noop.stderr  # the lake's table state answered

    table = catalog(lake).load_table("acme.items")  # another writer commits: the state no longer describes the table
    with table.transaction() as txn:
        txn.set_properties({f"apilake.fingerprint.{DATE}": "from-another-writer"})
    again = run_cli("tables", str(job))
    assert again.returncode == 0, again.stdout + again.stderr
    assert catalog(lake).load_table("acme.items").properties[f"apilake.fingerprint.{DATE}"] != "from-another-writer"
    assert sorted(r["id"] for r in read(lake, "acme.items")) == [1, 2]
    catalog(lake).drop_table("acme.items")  # a table dropped from the catalog behind the state's back is built again
    assert run_cli("tables", str(job)).returncode == 0
    assert sorted(r["id"] for r in read(lake, "acme.items")) == [1, 2]
    (lake / "_apilake/tables/state/acme.items.json").write_text("{not json")  # a damaged state: the catalog is consulted
    assert "unchanged" in run_cli("tables", str(job)).stdout


def test_a_csv_column_whose_type_changes_after_the_first_block_widens(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    lines = ["id,n,tag"] + [f"{i},{i}," for i in range(150_000)] + ["150000,2.5,late", "150001,N/A,"]  # ~1.9 MB: past the first block
    _land(lake, DATE, None, raw="\n".join(lines).encode())
    job = _local_json_job(tmp_path, {}, table={"format": "csv"})
    result = run_cli("tables", str(job))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {r["id"]: r for r in read(lake, "acme.items")}
    assert len(rows) == 150_002 and rows[7]["n"] == 7.0 and rows[150_000]["n"] == 2.5 and rows[150_001]["n"] is None
    assert rows[150_000]["tag"] == "late" and rows[7]["tag"] == ""  # as in a column that is text from its first block
    assert str(catalog(lake).load_table("acme.items").schema().find_field("n").field_type) == "double"


def test_null_only_records_nested_type_changes_and_a_widening_with_a_failed_date(tmp_path: Path) -> None:
    """Records whose every field is null are rows still; a nested field whose type changes fails
    its date with a clear error (no traceback); a widening that rebuilds every date commits
    nothing while one date fails, so no date's rows are lost."""
    lake = tmp_path / "lake"
    pages = {"2026-11-23": [{"id": None}, {"id": None}], "2026-11-24": [{"id": 1, "m": {"a": 1}, "n": 1}]}
    job = _local_json_job(tmp_path, pages)
    assert run_cli("tables", str(job)).returncode == 0
    assert sorted(str(r["_date"]) for r in read(lake, "acme.items")) == ["2026-11-23", "2026-11-23", "2026-11-24"]

    _land(lake, DATE, [{"id": 2, "m": {"a": "text"}, "n": 1}])
    nested = run_cli("tables", str(job))
    assert nested.returncode == 1 and "Traceback" not in nested.stdout + nested.stderr
    assert f"acme/items/dt={DATE}/data.json" in nested.stdout

    (lake / f"acme/items/dt={DATE}/data.json").unlink()  # that date's raw object is gone: its rebuild fails
    _land(lake, "2026-11-26", [{"id": 3, "n": 2.5}])  # ... while this one widens n: int → double, every date rebuilt
    widening = run_cli("tables", str(job))
    assert widening.returncode == 1 and "nothing was committed" in widening.stdout
    assert sorted(str(r["_date"]) for r in read(lake, "acme.items")) == ["2026-11-23", "2026-11-23", "2026-11-24"]


def test_a_raw_object_of_an_unknown_kind_fails_only_its_own_table(tmp_path: Path, emulator: Emulator) -> None:
    """A file apilake cannot tell how to read (`.txt`) fails its table's date with what to set;
    the other tables are built."""
    from test_e2e_vendors import acme_job

    endpoints = [
        {"name": "csv", "kind": "file", "path": "/export.csv", "params": {"date": "{date}"}},
        {"name": "txt", "kind": "file", "path": "/export.csv", "params": {"date": "{date}"}, "key": "{source}/{endpoint}/dt={date}/data.txt"},
    ]
    job = acme_job(tmp_path, emulator, endpoints, top={"tables": {}})
    result = run_cli("run", str(job), "--date", DATE, env=ACME_ENV)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"acme/txt/dt={DATE}/data.txt: cannot tell how to read it as rows" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert len(read(tmp_path / "lake", "acme.csv")) == 50
