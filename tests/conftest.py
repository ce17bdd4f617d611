"""Shared fixtures: the vendor emulator on loopback, and the real `apilake` command."""

from __future__ import annotations

import compileall
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import apilake
from apilake.emulator import Emulator, EmulatorConfig, Fault, expected_file_names, file_bytes
from moto_server import aws_env, bucket, glue_catalog_properties, moto_endpoint, moto_server  # noqa: F401 - fixtures, registered once for every module
from postgres_server import postgres_server, postgres_uri  # noqa: F401 - fixtures, registered once for every module
from seaweedfs_server import s3_bucket, seaweedfs_endpoint, seaweedfs_server  # noqa: F401 - fixtures, as above

APILAKE = str(Path(sys.executable).parent / "apilake")
TOKEN = "tok-9f8e7d6c5b4a"  # distinctive, so a leak anywhere is easy to find
#: data.ai's app history as a table (two pages of two records per product): the table tests' endpoint.
HISTORY_TABLE = {
    "name": "history",
    "kind": "json",
    "path": "/v1.3/intelligence/apps/{market}/app/{product_id}/history",
    "matrix": {"market": ["ios"], "product_id": [7]},
    "paginate": "next_page",
    "params": {"start_date": "{date}", "end_date": "{date}", "countries": "US+FR", "page_size": 2},
    "table": {"records": "list"},
}


def pytest_configure(config: pytest.Config) -> None:
    """Byte-compile apilake once, as `pip install` does: with PYTHONDONTWRITEBYTECODE set (CI
    images do), each of the hundreds of `apilake` processes the tests start would otherwise
    compile every module it imports (~60 ms each)."""
    compileall.compile_dir(Path(apilake.__file__).parent, quiet=1)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(config=EmulatorConfig(token=TOKEN)) as emu:
        yield emu


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120, preexec_fn: Any = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `apilake` command as a user would, in a fresh process (`preexec_fn`:
    e.g. a resource limit set in the child before it starts)."""
    return subprocess.run([APILAKE, *args], capture_output=True, text=True, env=_environ(env), timeout=timeout, preexec_fn=preexec_fn)


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `apilake` in the background (for kill, signal and lock tests); the caller waits for it."""
    return subprocess.Popen([APILAKE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_environ(env))


def _environ(extra: dict[str, str] | None) -> dict[str, str]:
    return {**os.environ, "DATAAI_TOKEN": TOKEN, **(extra or {})}


def wait_for(condition: Any, timeout: float = 30.0) -> None:
    """Poll until `condition()` is true (a bounded wait on a real process, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


def hold(faults: list[Fault], interval: float = 1.0) -> None:
    """Slow these drip faults to one chunk per `interval` s, responses already in flight too (the
    emulator reads the interval before each chunk): a run that a test is about to inspect, signal
    or kill cannot finish meanwhile, however loaded the machine. `interval=0` lets them finish."""
    for fault in faults:
        fault.interval = interval


def source(emu: Emulator, endpoints: list[dict[str, Any]], **settings: Any) -> dict[str, Any]:
    retry = {"attempts": 3, "backoff_initial": 0.05, "backoff_max": 0.2, "budget_seconds": 20}
    return {
        "name": "dataai",
        "base_url": emu.api_url,
        "token": "${DATAAI_TOKEN}",
        "concurrency": 4,
        "retry": retry,
        "endpoints": endpoints,
        **settings,
    }


def write_job(tmp_path: Path, emu: Emulator, endpoints: list[dict[str, Any]], **top: Any) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    src_settings = top.pop("source", {})
    job = {"timezone": "Asia/Seoul", "destination": str(tmp_path / "lake"), **top, "sources": [source(emu, endpoints, **src_settings)]}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def files(lake: Path) -> list[Path]:
    """Every file under `lake` now, also while a run writes there: a folder that goes during the
    walk (a destination closing removes its empty `.apilake-tmp/`) is passed over, as os.walk does."""
    return sorted(Path(folder, name) for folder, _dirs, names in os.walk(lake) for name in names)


def lake_objects(lake: Path) -> dict[str, bytes]:
    """Every landed object by key: apilake's own records and hidden temporary files excluded.

    Temporary files start with a dot, so lake readers (Spark, Hive, Trino) skip them too.
    """
    return {
        p.relative_to(lake).as_posix(): p.read_bytes()
        for p in files(lake)
        if not p.relative_to(lake).as_posix().startswith("_apilake/") and not p.name.startswith(".")
    }


def records(lake: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((lake / "_apilake" / "runs").glob("*.json"))]


def all_text(lake: Path, result: subprocess.CompletedProcess[str]) -> str:
    """Everything a run wrote that a person could read: output, logs, records, keys."""
    texts = [result.stdout, result.stderr]
    texts += [p.read_text() for p in (lake / "_apilake").rglob("*.json")] if (lake / "_apilake").exists() else []
    texts += [p.as_posix() for p in lake.rglob("*")] if lake.exists() else []
    return "\n".join(texts)


def expected_bulk(
    emulator: Emulator, bundles: str, start: str, end: str, kinds: tuple[str, ...] = ("metrics", "dimensions"), endpoint: str = "bulk_daily"
) -> dict[str, bytes]:
    """What a bulk endpoint must land under the default layout: every listed file of those kinds, byte-exact."""
    expected = {}
    for name in expected_file_names(bundles, start, end, "daily", emulator.config):
        kind, *_, date, file_name = name.split("/")
        if kind in kinds:
            folder = "metrics" if kind == "metrics" else f"dimensions/{file_name.split('.')[0]}"
            expected[f"dataai/{endpoint}/{folder}/dt={date}/{file_name}"] = file_bytes(name, emulator.config.file_size_for(name))
    return expected


def bulk_endpoint(bundles: str = "app_downloads,usage", **overrides: Any) -> dict[str, Any]:
    """The vendor's daily bulk listing as a job file endpoint (`expected_bulk` knows what it lands)."""
    params = {"metric_bundles": bundles, "country_codes": "all", "granularity": "daily", "start_date": "{date}", "end_date": "{date}"}
    return {"name": "bulk_daily", "kind": "bulk", "path": "/v2/bulk/get-bulk-urls", "params": params, **overrides}


def details_endpoint(markets: tuple[str, ...] = ("ios", "google-play"), products: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """A JSON endpoint with one small unit per market and product."""
    return {
        "name": "details",
        "kind": "json",
        "path": "/v1.3/apps/{market}/app/{product_id}/details",
        "matrix": {"market": list(markets), "product_id": list(products)},
    }


def temp_files(lake: Path) -> list[Path]:
    """apilake's temporary files under a lake: transfers in flight, or leftovers of a killed run."""
    return [p for p in files(lake) if ".apilake-tmp-" in p.name]


def temp_bytes(lake: Path) -> int:
    """Bytes in temporary files now; a file renamed over its key meanwhile has landed and counts 0."""
    total = 0
    for path in temp_files(lake):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass
    return total
