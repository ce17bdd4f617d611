"""The tables benchmarks: landed raw objects → an Iceberg table with `apilake tables`, beside
DuckDB writing the same raw objects to Parquet (`COPY (FROM read_csv/read_json(...)) TO ...`).

Each scenario lands its raw zone once with `apilake run` (untimed). Then, round after round, each
contender runs as a child process (`measure.run_measured`) on the same files: `apilake tables`
builds the table from nothing (its catalog and warehouse are removed before each run), DuckDB
writes one zstd Parquet file. A run counts only when its output holds exactly the rows the
emulator served (`file_rows`, `expected_records`). The no-op scenario builds its tables once,
then times a refresh that must find every partition unchanged and write nothing.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from apilake.emulator import bulk_file_names, expected_records, file_rows

from .contenders import VENV_BIN
from .measure import Measurement, run_measured
from .results import MB, RunResult, summarize
from .scenarios import BUNDLE, DATE, TOKEN, MiB
from .servers import EmulatorProcess, bench_env
from .verify import clear_local

Shape = Literal["bulk", "json", "noop"]
HISTORY = "/v1.3/intelligence/apps/{market}/app/{product_id}/history"
HISTORY_PARAMS = {"countries": ["US", "GB", "FR", "DE", "JP"], "start_date": "{date-9}", "end_date": "{date}", "page_size": 100}
DETAILS = "/v1.3/apps/ios/app/{n}/details"
TABLES_DIR = "_apilake/tables"


@dataclass(frozen=True)
class TablesScenario:
    """`bulk`: `files` bulk files of `file_size`; `json`: `pages` pages of 100 records (one unit
    each); `noop`: `endpoints` one-page endpoints over `dates` dates, refreshed unchanged."""

    name: str
    title: str
    shape: Shape
    files: int = 0
    file_size: int = 0
    pages: int = 0
    dates: int = 1
    endpoints: int = 1

    @property
    def run_dates(self) -> tuple[str, str]:
        last = dt.date.fromisoformat(DATE)
        return (last - dt.timedelta(days=self.dates - 1)).isoformat(), DATE

    def emulator_config(self) -> dict[str, object]:
        return {"file_size": self.file_size or 64 * 1024, "metric_files": self.files, "dimensions": []}

    def expected_rows(self) -> int:
        if self.shape == "bulk":
            return sum(file_rows(n, self.file_size) for n in bulk_file_names(BUNDLE, DATE, DATE, "daily", self.files, ()))
        if self.shape == "json":
            end = dt.date.fromisoformat(DATE)
            params = {**HISTORY_PARAMS, "start_date": (end - dt.timedelta(days=9)).isoformat(), "end_date": DATE, "page_size": "100"}
            return sum(len(expected_records(HISTORY.format(market="ios", product_id=p), params)) for p in range(1, self.pages + 1))
        return self.dates * self.endpoints

    @property
    def table(self) -> str:
        return {"bulk": "dataai.bulk_daily", "json": "dataai.history", "noop": "dataai.details_1"}[self.shape]


def tables_scenarios(*, quick: bool = False) -> list[TablesScenario]:
    bulk = TablesScenario("tables-bulk", "8 × 64 MiB bulk .csv.gz → one table", "bulk", files=8, file_size=64 * MiB)
    big = TablesScenario("tables-bulk-1g", "1 × 1 GiB bulk .csv.gz → one table (flat RSS)", "bulk", files=1, file_size=1024 * MiB)
    json_ = TablesScenario("tables-json", "2,000 JSON pages of 100 records → one table", "json", pages=2000)
    noop = TablesScenario("tables-noop", "refresh that changes nothing: 100 dates × 10 endpoints", "noop", dates=100, endpoints=10)
    if quick:
        bulk = replace(bulk, title="4 × 16 MiB bulk .csv.gz → one table", files=4, file_size=16 * MiB)
        big = replace(big, title="1 × 128 MiB bulk .csv.gz → one table (flat RSS)", file_size=128 * MiB)
        json_ = replace(json_, title="300 JSON pages of 100 records → one table", pages=300)
        noop = replace(noop, title="refresh that changes nothing: 20 dates × 10 endpoints", dates=20)
    return [bulk, big, json_, noop]


def job_document(scenario: TablesScenario, api_url: str, lake: Path, *, tables: bool) -> dict[str, Any]:
    """The job a user would write: landing it without `tables:` lands only (the setup)."""
    source: dict[str, Any] = {"name": "dataai", "base_url": api_url, "token": "${DATAAI_TOKEN}"}
    if scenario.shape == "bulk":
        params = {"metric_bundles": BUNDLE, "granularity": "daily", "start_date": "{date}", "end_date": "{date}"}
        source["endpoints"] = [{"name": "bulk_daily", "kind": "bulk", "path": "/v2/bulk/get-bulk-urls", "params": params}]
    elif scenario.shape == "json":
        matrix = {"market": ["ios"], "product_id": list(range(1, scenario.pages + 1))}
        source["endpoints"] = [{"name": "history", "kind": "json", "path": HISTORY, "params": HISTORY_PARAMS, "matrix": matrix,
                                "paginate": "next_page", **({"table": {"records": "list"}} if tables else {})}]  # fmt: skip
    else:
        source["endpoints"] = [{"name": f"details_{n}", "kind": "json", "path": DETAILS.format(n=n)} for n in range(1, scenario.endpoints + 1)]
    job: dict[str, Any] = {"timezone": "UTC", "destination": str(lake), "sources": [source]}
    if tables:
        job["tables"] = {}
    return job


def duckdb_sql(scenario: TablesScenario, lake: Path, out: Path) -> str:
    """DuckDB's own conversion of the same raw objects to one zstd Parquet file."""
    if scenario.shape == "bulk":
        source = f"FROM read_csv('{lake}/dataai/bulk_daily/**/*.csv.gz', filename = true)"
    else:
        source = f"SELECT unnest(list, recursive := true), product_id, market, filename FROM read_json('{lake}/dataai/history/**/*.json', filename = true)"
    return f"COPY ({source}) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"


@dataclass
class TablesReport:
    scenario: TablesScenario
    input_bytes: int
    rows: int
    summaries: list[Any]
    runs: list[RunResult]
    notes: list[str]

    def get(self, contender: str) -> Any:
        return next((s for s in self.summaries if s.contender == contender), None)


LABELS = {"apilake": "apilake tables", "duckdb": "DuckDB COPY … TO parquet (zstd)"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class TablesBench:
    def __init__(self, rounds: int, workdir: Path) -> None:
        self.rounds = rounds
        self.workdir = workdir
        self.apilake = str(VENV_BIN / "apilake")
        self.env = bench_env({"DATAAI_TOKEN": TOKEN})

    def run(self, scenario: TablesScenario) -> TablesReport:
        log(f"\n== {scenario.name}: {scenario.title}")
        lake, scratch = self.workdir / "lake", self.workdir / "scratch"
        for folder in (lake, scratch):
            clear_local(folder)
            folder.mkdir(parents=True)
        with EmulatorProcess(scenario.emulator_config()) as emulator:
            land_job, job = scratch / "land.yaml", scratch / "job.yaml"
            land_job.write_text(yaml.safe_dump(job_document(scenario, emulator.api_url, lake, tables=False), sort_keys=False))
            job.write_text(yaml.safe_dump(job_document(scenario, emulator.api_url, lake, tables=True), sort_keys=False))
            started = time.monotonic()
            first, last = scenario.run_dates
            self._check(subprocess.run([self.apilake, "run", str(land_job), "--from", first, "--to", last, "-q"],
                                       env=self.env, capture_output=True, text=True), "landing")  # fmt: skip
        input_bytes = sum(p.stat().st_size for p in (lake / "dataai").rglob("*") if p.is_file())
        expected = scenario.expected_rows()
        log(f"   landed {input_bytes / MB:,.1f} MB in {time.monotonic() - started:.1f} s; {expected:,} rows expected")
        contenders = ["apilake"] if scenario.shape == "noop" else ["apilake", "duckdb"]
        if scenario.shape == "noop":
            self._check(subprocess.run([self.apilake, "tables", str(job), "-q"], env=self.env, capture_output=True, text=True), "first build")
        runs: list[RunResult] = []
        for round_ in range(1, self.rounds + 1):
            for contender in contenders:
                result = self._once(scenario, contender, round_, job, lake, scratch, expected)
                runs.append(result)
                status = "ok" if result.verified else "NOT COUNTED: " + "; ".join(result.problems)
                log(f"   round {round_} {contender:<8} {result.wall_s:7.2f} s  cpu {result.cpu_s:6.2f} s  "
                    f"rss {result.peak_rss_bytes / 1e6:6.0f} MB  {status}")  # fmt: skip
        summaries = [s for c in contenders if (s := summarize(scenario.name, c, LABELS[c], input_bytes, [r for r in runs if r.contender == c]))]
        clear_local(lake)
        clear_local(scratch)
        return TablesReport(scenario, input_bytes, expected, summaries, runs, [])

    def _once(self, scenario: TablesScenario, contender: str, round_: int, job: Path, lake: Path, scratch: Path, expected: int) -> RunResult:
        out = scratch / "duckdb.parquet"
        if contender == "apilake":
            if scenario.shape != "noop":
                clear_local(lake / TABLES_DIR)
            argv = [self.apilake, "tables", str(job), "-q"]
        else:
            out.unlink(missing_ok=True)
            code = "import sys, duckdb; duckdb.sql(sys.argv[1])"
            argv = [sys.executable, "-c", code, duckdb_sql(scenario, lake, out)]
        before = _tree(lake / TABLES_DIR)
        os.sync()
        m = run_measured(argv, env=self.env, cwd=scratch)
        synced = time.monotonic()
        os.sync()
        sync_s = time.monotonic() - synced
        problems = self._verify(scenario, contender, m, job, out, expected, before, lake)
        return RunResult(scenario.name, contender, round_, round(m.wall_s, 4), round(m.user_s, 3), round(m.sys_s, 3),
                         m.peak_rss_bytes, not problems, expected, problems, {}, None, round(sync_s, 4))  # fmt: skip

    def _verify(self, scenario: TablesScenario, contender: str, m: Measurement, job: Path, out: Path, expected: int,
                before: dict[str, int], lake: Path) -> list[str]:  # fmt: skip
        if m.exit_code != 0:
            return [f"exit code {m.exit_code}: {m.output.strip()[-600:]}"]
        if scenario.shape == "noop":
            changed = _tree(lake / TABLES_DIR) != before
            return ["the refresh wrote to the catalog or warehouse"] if changed else []
        if contender == "apilake":
            answer = subprocess.run([self.apilake, "query", str(job), f"SELECT count(*) FROM {scenario.table}", "--format", "csv"],
                                    env=self.env, capture_output=True, text=True)  # fmt: skip
            rows = int(answer.stdout.split()[-1]) if answer.returncode == 0 else -1
        else:
            import duckdb

            rows = int(duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}')").fetchall()[0][0])
        return [] if rows == expected else [f"{rows:,} rows, not the {expected:,} served"]

    @staticmethod
    def _check(done: subprocess.CompletedProcess[str], what: str) -> None:
        if done.returncode != 0:
            raise RuntimeError(f"{what} failed ({done.returncode}): {(done.stdout + done.stderr)[-1500:]}")


def _tree(folder: Path) -> dict[str, int]:
    """Every file under `folder` with its size: a no-op refresh leaves this as it was."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()} if folder.exists() else {}


def duckdb_version() -> str:
    import duckdb

    return str(duckdb.__version__)
