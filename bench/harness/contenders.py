"""The contenders: how each one is run, as a command line, for a scenario and a fresh destination.

- apilake: `apilake run JOB.yaml` as a user runs it (the job file written for the scenario).
- original: bench/original_batch.py, the sequential temp-file pattern apilake replaces.
- rclone: `rclone copyurl` per file, 4 at a time (rclone's default `--transfers`), when installed.
- limit: local lake: curl with parallel transfers straight to files; S3: the S3 server's own
  ingest rate for files already on disk (harness.s3_ingest). For JSON the limit is the quota's
  floor, computed, not run.

Bulk contenders other than apilake and the original get the listing's URLs from the harness
(fetched once, untimed): the listing is one small JSON call, and neither tool parses JSON.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import yaml

from .scenarios import DATE, TOKEN, BulkScenario, JsonScenario, LatencyScenario, Scenario
from .servers import BENCH_DIR, EmulatorProcess, bench_env

VENV_BIN = Path(sys.executable).parent
RCLONE_TRANSFERS = 4
CURL_PARALLEL = 8
S3_FILES_IN_FLIGHT = 4


@dataclass
class Setup:
    """What a scenario's runs share: the servers, and inputs prepared once, untimed."""

    emulator: EmulatorProcess
    workdir: Path
    s3_endpoint: str | None = None
    listing_urls: tuple[str, ...] = ()  # bulk: the listing's file URLs (302 to the files origin)
    staged_dir: Path | None = None  # bulk into S3: the files on local disk, for the S3 limit


@dataclass
class Command:
    argv: list[str]
    env: dict[str, str]


class Contender(Protocol):
    name: str

    def label(self, scenario: Scenario) -> str: ...

    def skip_reason(self, scenario: Scenario) -> str | None: ...

    def command(self, scenario: Scenario, setup: Setup, dest: str, scratch: Path) -> Command: ...


def file_name(url: str) -> str:
    """The vendor's object name carried in a listing URL (`...?name=metrics/...csv.gz&signature=...`)."""
    return parse_qs(urlsplit(url).query)["name"][0]


PATCHES = BENCH_DIR / "patches"


class Apilake:
    """`apilake run`; with `patch`, an experiment from bench/patches/<patch> is loaded at start-up."""

    def __init__(self, concurrency: int | None = None, patch: str | None = None) -> None:
        self.concurrency = concurrency  # the source's `concurrency`; None: the default (4)
        self.patch = patch
        self.name = f"apilake+{patch}" if patch else "apilake"
        if patch and not (PATCHES / patch).is_dir():
            raise ValueError(f"no bench patch {patch!r} (see {PATCHES})")

    def label(self, scenario: Scenario) -> str:
        label = "apilake run" + (f" + bench patch `{self.patch}`" if self.patch else "")
        return label + (f" (concurrency {self.concurrency})" if self.concurrency else "")

    def skip_reason(self, scenario: Scenario) -> str | None:
        return None

    def command(self, scenario: Scenario, setup: Setup, dest: str, scratch: Path) -> Command:
        job = scratch / "job.yaml"
        job.write_text(yaml.safe_dump(job_document(scenario, setup, dest, self.concurrency), sort_keys=False))
        env = bench_env({"DATAAI_TOKEN": TOKEN} | ({"PYTHONPATH": str(PATCHES / self.patch)} if self.patch else {}))
        dates = ["--from", scenario.dates[0], "--to", scenario.dates[-1]] if isinstance(scenario, LatencyScenario) else ["--date", DATE]
        return Command([str(VENV_BIN / "apilake"), "run", str(job), *dates], env)


def job_document(scenario: Scenario, setup: Setup, dest: str, concurrency: int | None) -> dict[str, object]:
    """The job file a user would write for the scenario."""
    source: dict[str, object] = {"name": "dataai", "base_url": setup.emulator.api_url, "token": "${DATAAI_TOKEN}"}
    if concurrency:
        source["concurrency"] = concurrency
    if isinstance(scenario, BulkScenario):
        if scenario.verify != "gzip":
            source["verify"] = scenario.verify
        params = {"metric_bundles": "bench", "granularity": "daily", "start_date": "{date}", "end_date": "{date}"}
        source["endpoints"] = [{"name": "bulk_daily", "kind": "bulk", "path": "/v2/bulk/get-bulk-urls", "params": params}]
    elif isinstance(scenario, LatencyScenario):
        bulk = {"metric_bundles": "bench", "granularity": "daily", "start_date": "{date}", "end_date": "{date}"}
        matrix = {"market": ["ios"], "product_id": list(range(1, scenario.singles + 1))}
        reviews = {"countries": "US", "start_date": "{date}", "end_date": "{date}", "page_size": 1}
        source["endpoints"] = [
            {"name": "details", "kind": "json", "path": "/v1.3/apps/{market}/app/{product_id}/details", "matrix": matrix},
            {"name": "reviews", "kind": "json", "path": f"/v1.3/apps/ios/app/{scenario.page_product}/reviews",
             "params": reviews, "paginate": "page_index"},
            {"name": "bulk_daily", "kind": "bulk", "path": "/v2/bulk/get-bulk-urls", "params": bulk},
        ]  # fmt: skip
    elif isinstance(scenario, JsonScenario):
        source["requests_per_second"] = scenario.per_second
        source["requests_per_minute"] = scenario.per_second * 60
        matrix = {"market": ["ios"], "product_id": list(scenario.product_ids)}
        source["endpoints"] = [{"name": "details", "kind": "json", "path": "/v1.3/apps/{market}/app/{product_id}/details", "matrix": matrix}]
    job: dict[str, object] = {"timezone": "UTC", "destination": dest, "sources": [source]}
    if dest.startswith("s3://"):
        job["s3"] = {"endpoint_url": setup.s3_endpoint}
    return job


class Original:
    name = "original"

    def label(self, scenario: Scenario) -> str:
        return "original pattern (sequential, temp file)"

    def skip_reason(self, scenario: Scenario) -> str | None:
        return None if isinstance(scenario, BulkScenario | JsonScenario) else "not applicable"

    def command(self, scenario: Scenario, setup: Setup, dest: str, scratch: Path) -> Command:
        script = [sys.executable, str(BENCH_DIR / "original_batch.py")]
        common = ["--api", setup.emulator.api_url, "--token", TOKEN, "--dest", dest]
        env = bench_env({"TMPDIR": str(scratch)})  # its temp files on the lake's disk
        if isinstance(scenario, JsonScenario):
            paths = scratch / "paths.txt"
            paths.write_text("\n".join(scenario.paths()) + "\n")
            return Command([*script, "json", *common, "--paths-file", str(paths)], env)
        assert isinstance(scenario, BulkScenario)
        s3 = ["--s3-endpoint", setup.s3_endpoint] if setup.s3_endpoint and dest.startswith("s3://") else []
        return Command([*script, "bulk", *common, "--listing", scenario.listing_path, *s3], env)


class Rclone:
    name = "rclone"

    def __init__(self) -> None:
        self.binary = shutil.which("rclone")

    def version(self) -> str | None:
        if not self.binary:
            return None
        out = subprocess.run([self.binary, "version"], capture_output=True, text=True).stdout
        return out.splitlines()[0] if out else None

    def label(self, scenario: Scenario) -> str:
        return f"rclone copyurl ×{RCLONE_TRANSFERS} parallel"

    def skip_reason(self, scenario: Scenario) -> str | None:
        if not self.binary:
            return "rclone is not installed (`apt-get install rclone`)"
        return None if isinstance(scenario, BulkScenario) else "not applicable (no JSON API support)"

    def command(self, scenario: Scenario, setup: Setup, dest: str, scratch: Path) -> Command:
        assert self.binary is not None
        flags = ["--header", f"Authorization: Bearer {TOKEN}", "--config", str(scratch / "rclone.conf")]
        if dest.startswith("s3://"):
            flags += ["--s3-provider", "Other", "--s3-env-auth", "--s3-endpoint", str(setup.s3_endpoint),
                      "--s3-region", "us-east-1", "--s3-no-head"]  # fmt: skip
            target = ":s3:" + dest.removeprefix("s3://").rstrip("/")
        else:
            target = dest.rstrip("/")
        lines = [f"{url} {target}/{file_name(url)}" for url in setup.listing_urls]
        jobs = scratch / "rclone-jobs.txt"
        jobs.write_text("\n".join(lines) + "\n")
        argv = ["xargs", "-a", str(jobs), "-P", str(RCLONE_TRANSFERS), "-L", "1", self.binary, "copyurl", *flags]
        return Command(argv, bench_env())  # bench_env has no AWS_CA_BUNDLE


class Limit:
    name = "limit"

    def label(self, scenario: Scenario) -> str:
        if isinstance(scenario, JsonScenario):
            return "quota floor (units / rate)"
        if scenario.dest == "s3":  # type: ignore[union-attr]
            return f"S3 ingest of local files (boto3, {S3_FILES_IN_FLIGHT} files in flight)"
        return f"curl --parallel-max {CURL_PARALLEL} to disk"

    def skip_reason(self, scenario: Scenario) -> str | None:
        if isinstance(scenario, JsonScenario):
            return "computed, not run"
        if not isinstance(scenario, BulkScenario):
            return "not applicable"
        return None if scenario.dest == "s3" or shutil.which("curl") else "curl is not installed"

    def command(self, scenario: Scenario, setup: Setup, dest: str, scratch: Path) -> Command:
        assert isinstance(scenario, BulkScenario)
        if scenario.dest == "s3":
            assert setup.staged_dir is not None
            argv = [sys.executable, "-m", "harness.s3_ingest", "--endpoint", str(setup.s3_endpoint), "--dest", dest,
                    "--files-in-flight", str(S3_FILES_IN_FLIGHT), str(setup.staged_dir)]  # fmt: skip
            return Command(argv, bench_env({"PYTHONPATH": str(BENCH_DIR)}))
        config = scratch / "curl.cfg"
        config.write_text("".join(f'url = "{url}"\noutput = "{dest}/{file_name(url)}"\n' for url in setup.listing_urls))
        argv = ["curl", "--parallel", "--parallel-max", str(CURL_PARALLEL), "--fail", "--silent", "--show-error",
                "--location", "--create-dirs", "-H", f"Authorization: Bearer {TOKEN}", "--config", str(config)]  # fmt: skip
        return Command(argv, bench_env())
