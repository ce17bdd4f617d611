"""The table recipes of docs/recipes.md, run as written against the emulator's two vendors: land, build the
tables (`apilake run` with `tables:`), query them (`apilake query`), and compare every row with
what the vendor served."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from apilake.emulator import Emulator, acme_items, expected_file_names, file_bytes, file_rows, gunzip_members, report_file_names
from conftest import TOKEN, all_text, lake_objects, run_cli

RECIPES_PAGE = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"
RECIPES = re.findall(r"```yaml\n(.*?)```", RECIPES_PAGE.read_text(), re.S)
DATE = "2026-11-25"
ACME_SECRET = "acme-secret-a1b2c3d4"


def recipe(tmp_path: Path, source: str) -> Path:
    """The recipe of this source, as a job file."""
    [text] = [r for r in RECIPES if "tables:" in r and f"- name: {source}\n" in r]
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def land_and_query(job: Path, lake: Path, sql: str, env: dict[str, str]) -> tuple[Any, list[dict[str, Any]]]:
    landed = run_cli("run", str(job), "--date", DATE, "--dest", str(lake), env=env)
    assert landed.returncode == 0, landed.stdout + landed.stderr
    assert "tables:" in landed.stdout  # the run built what it landed
    answer = run_cli("query", str(job), sql, "--dest", str(lake), "--format", "json", env=env)
    assert answer.returncode == 0, answer.stdout + answer.stderr
    return landed, json.loads(answer.stdout)


def csv_rows(data: bytes) -> list[tuple[str, str, int, str, int]]:
    """A bulk file's rows as typed values (the table holds numbers, the file their text)."""
    rows = list(csv.reader(io.StringIO(gunzip_members(data).decode())))[1:]
    return [(d, c, int(p), m, int(v)) for d, c, p, m, v in rows]


def test_dataai_bulk_files_become_a_metrics_table_and_a_table_per_dimension(tmp_path: Path, emulator: Emulator) -> None:
    lake = tmp_path / "lake"
    tables = {"metrics": "bulk_metrics", "product_id": "bulk_dimensions_product_id", "company_id": "bulk_dimensions_company_id"}
    sql = " UNION ALL ".join(
        f"SELECT '{kind}' AS kind, _date, _apilake_object, _apilake_run_id, date, country, product_id, metric, value FROM dataai.{table}"
        for kind, table in tables.items()
    )
    landed, rows = land_and_query(recipe(tmp_path, "dataai"), lake, sql, {"DATAAI_BASE_URL": emulator.api_url})
    run_id = re.search(r"run (\S+) succeeded", landed.stdout).group(1)  # type: ignore[union-attr]
    objects = lake_objects(lake)
    expected: dict[tuple[str, str], list[Any]] = {}
    for name in expected_file_names("app_downloads", DATE, DATE, "daily", emulator.config):
        kind = "metrics" if name.startswith("metrics/") else name.rsplit("/", 1)[1].split(".")[0]
        data = file_bytes(name, emulator.config.file_size_for(name))
        [key] = [k for k, v in objects.items() if v == data]  # the raw object that holds this file
        expected[kind, key] = sorted(csv_rows(data))
        assert len(expected[kind, key]) == file_rows(name, emulator.config.file_size_for(name))
    got: dict[tuple[str, str], list[Any]] = {}
    for row in rows:
        assert (row["_date"], row["_apilake_run_id"]) == (DATE, run_id)
        got.setdefault((row["kind"], row["_apilake_object"]), []).append((row["date"], row["country"], row["product_id"], row["metric"], row["value"]))
    assert {k: sorted(v) for k, v in got.items()} == expected  # every row of every file, in its table, once
    assert TOKEN not in all_text(lake, landed)


def test_acme_list_fan_out_and_report_become_tables_with_the_units_values(tmp_path: Path, emulator: Emulator) -> None:
    emulator.acme.config.report_polls = 0  # done at the first poll: the recipe's default interval is not waited
    lake = tmp_path / "lake"
    env = {"ACME_BASE_URL": emulator.api_url + "/acme", "ACME_TOKEN_URL": emulator.auth_url + "/oauth/token", "ACME_SECRET": ACME_SECRET}
    sql = (
        "SELECT 'items' AS t, to_json(struct_pack(id, n, value)) AS row FROM acme.items UNION ALL "
        "SELECT 'products', to_json(struct_pack(account_id, id)) FROM acme.products UNION ALL "
        "SELECT 'stats', to_json(struct_pack(product_id, product, date, installs)) FROM acme.stats UNION ALL "
        "SELECT 'installs', to_json(struct_pack(_apilake_object, n := count(*))) FROM acme.installs GROUP BY _apilake_object"
    )
    landed, rows = land_and_query(recipe(tmp_path, "acme"), lake, sql, env)
    got: dict[str, list[Any]] = {}
    for row in rows:
        got.setdefault(row["t"], []).append(json.loads(row["row"]))
    assert sorted(got["items"], key=lambda r: r["id"]) == acme_items(emulator.acme.config.items)
    objects = lake_objects(lake)
    pages = {k: json.loads(v) for k, v in objects.items() if k.startswith("acme/products/")}
    products = sorted(({"account_id": page["account"], "id": p["id"]} for page in pages.values() for p in page["products"]), key=str)
    assert sorted(got["products"], key=str) == products and len(products) == 4
    stats = [{"product_id": s["product"], **s} for s in (json.loads(v) for k, v in objects.items() if k.startswith("acme/stats/"))]
    assert sorted(got["stats"], key=str) == sorted(stats, key=str) and len(stats) == 4
    files = {name.rsplit("/", 1)[1]: file_rows(name, emulator.config.file_size_for(name)) for name in report_file_names("installs", DATE, DATE, 2)}
    assert {r["_apilake_object"].rsplit("/", 1)[1]: r["n"] for r in got["installs"]} == files
    text = all_text(lake, landed)
    for secret in (ACME_SECRET, *emulator.acme._tokens):
        assert secret not in text
