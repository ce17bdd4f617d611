"""What is benchmarked: the scenarios, their sizes, the emulator behind each, and what must land.

Every scenario knows its expected output as a multiset of sha256 digests (one per object), so the
harness can check any contender's output, whatever its key layout, for completeness and byte
identity before its time counts.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Literal

from apilake.emulator import bulk_file_names, file_length, file_sha256
from apilake.emulator.data import expected_records, page_body

MiB = 1 << 20
KiB = 1 << 10
DATE = "2026-11-25"
BUNDLE = "bench"
TOKEN = "demo-token"
DETAILS_PATH = "/v1.3/apps/ios/app/{product_id}/details"  # one call per unit, no paging

Dest = Literal["local", "s3"]
S3Server = Literal["moto", "seaweedfs"]
S3_SERVER_TITLES: dict[S3Server, str] = {"moto": "moto", "seaweedfs": "SeaweedFS"}


@dataclass(frozen=True)
class BulkScenario:
    """A bulk listing of `files` files of `file_size` bytes each, landed into `dest`."""

    name: str
    title: str
    files: int
    file_size: int
    dest: Dest
    verify: Literal["gzip", "length"] = "gzip"  # apilake's `verify:` (the other contenders check nothing)
    s3_server: S3Server = "moto"  # the S3 server the harness starts, when `dest` is s3
    kind: Literal["bulk"] = "bulk"

    @property
    def local_name(self) -> str:
        """The same files into the local lake: the reference of an S3 scenario's CPU target."""
        return self.name.replace("-s3", "-local").removesuffix(f"-{self.s3_server}")

    def emulator_config(self) -> dict[str, object]:
        return {"file_size": self.file_size, "metric_files": self.files, "dimensions": []}

    @cached_property
    def names(self) -> list[str]:
        """The vendor's file names (paths under its object store), in listing order."""
        return bulk_file_names(BUNDLE, DATE, DATE, "daily", self.files, ())

    @cached_property
    def total_bytes(self) -> int:
        return sum(file_length(n, self.file_size) for n in self.names)

    def expected(self) -> Counter[str]:
        """sha256 of every object that must land (computed by generating the bytes: slow for GiBs)."""
        return Counter(file_sha256(n, self.file_size) for n in self.names)

    @property
    def listing_path(self) -> str:
        return f"/v2/bulk/get-bulk-urls?metric_bundles={BUNDLE}&granularity=daily&start_date={DATE}&end_date={DATE}"


@dataclass(frozen=True)
class JsonScenario:
    """`units` one-call JSON units against an API with `latency_ms` and a quota of `per_second`."""

    name: str
    title: str
    units: int
    latency_ms: float = 20
    per_second: int = 100  # the vendor's 6,000/min, enforced per any 1-second window
    dest: Dest = "local"
    kind: Literal["json"] = "json"

    def emulator_config(self) -> dict[str, object]:
        return {"latency_ms": self.latency_ms, "requests_per_minute": self.per_second, "quota_window_s": 1.0}

    @property
    def product_ids(self) -> range:
        return range(1, self.units + 1)

    def paths(self) -> list[str]:
        return [DETAILS_PATH.format(product_id=p) for p in self.product_ids]

    @property
    def floor_s(self) -> float:
        """Fastest possible wall time under the quota: units / rate."""
        return self.units / self.per_second

    @cached_property
    def bodies(self) -> list[bytes]:
        """The exact bytes the emulator answers for each unit."""
        return [json.dumps(page_body(p, "", {}, 10), separators=(",", ":")).encode() for p in self.paths()]

    @cached_property
    def total_bytes(self) -> int:
        return sum(len(b) for b in self.bodies)

    def expected(self) -> Counter[str]:
        return Counter(hashlib.sha256(b).hexdigest() for b in self.bodies)


@dataclass(frozen=True)
class StartupScenario:
    """`apilake --help`, and `apilake run --dry-run` of a job that expands to `units` units."""

    name: str
    title: str
    units: int
    repeats: int
    kind: Literal["startup"] = "startup"


@dataclass(frozen=True)
class LatencyScenario:
    """A mixed job over `dates` dates against a distant vendor: every request waits `latency_ms`
    and every body flows at `bytes_per_second` per connection. What bounds the wall time is
    computed from these settings (`critical_path_s`), so apilake's scheduling can be judged."""

    name: str
    title: str
    dates: tuple[str, ...] = ("2026-11-23", "2026-11-24", "2026-11-25")
    latency_ms: float = 150
    bytes_per_second: int = 4 * MiB
    files: int = 2  # bulk files per date
    file_size: int = 4 * MiB
    singles: int = 24  # one-request JSON units per date
    concurrency: int = 4  # the source's (apilake's default)
    dest: Dest = "local"
    kind: Literal["latency"] = "latency"

    def emulator_config(self) -> dict[str, object]:
        return {"latency_ms": self.latency_ms, "files_latency_ms": self.latency_ms, "bytes_per_second": self.bytes_per_second,
                "file_size": self.file_size, "metric_files": self.files, "dimensions": [], "page_size": 1}  # fmt: skip

    @property
    def page_product(self) -> int:
        return 1  # reviews of one product; `page_size: 1` makes each of its records a page

    @cached_property
    def file_names(self) -> list[str]:
        return [n for d in self.dates for n in bulk_file_names(BUNDLE, d, d, "daily", self.files, ())]

    @cached_property
    def total_bytes(self) -> int:
        return sum(file_length(n, self.file_size) for n in self.file_names)

    @cached_property
    def pages(self) -> dict[str, int]:
        """Pages of the paginated endpoint (reviews, one record per page) for each date."""
        path = f"/v1.3/apps/ios/app/{self.page_product}/reviews"
        return {d: max(1, len(expected_records(path, {"countries": "US", "start_date": d, "end_date": d}))) for d in self.dates}

    def chains_s(self) -> dict[str, float]:
        """The longest chain of dependent requests of each kind of unit."""
        hop = self.latency_ms / 1000
        file_s = hop + hop + self.file_size / self.bytes_per_second  # 302 from the API, then the object store
        return {"bulk listing → files": hop + file_s, "paginated": max(self.pages.values()) * hop, "single": hop}

    def work_s(self) -> float:
        """Slot-seconds of all requests: with `concurrency` slots, the wall time is at least work / slots."""
        hop = self.latency_ms / 1000
        file_s = 2 * hop + self.file_size / self.bytes_per_second
        per_date = hop + self.files * file_s + self.singles * hop
        return per_date * len(self.dates) + sum(self.pages.values()) * hop

    @property
    def critical_path_s(self) -> float:
        return max(max(self.chains_s().values()), self.work_s() / self.concurrency)

    @property
    def expected_objects(self) -> int:
        return len(self.dates) * (self.files + self.singles) + sum(self.pages.values())

    def expected_files(self) -> Counter[str]:
        return Counter(file_sha256(n, self.file_size) for n in self.file_names)


Scenario = BulkScenario | JsonScenario | LatencyScenario | StartupScenario


def default_scenarios(*, quick: bool = False) -> list[Scenario]:
    """The scenarios in run order; `quick` shrinks sizes to fit a couple of minutes."""
    large = BulkScenario("bulk-large-local", "8 × 64 MiB into the local lake", 8, 64 * MiB, "local")
    small = BulkScenario("bulk-small-local", "500 × 200 KiB into the local lake", 500, 200 * KiB, "local")
    single = BulkScenario("single-1g-local", "1 × 1 GiB into the local lake (flat RSS)", 1, 1024 * MiB, "local")
    json_ = JsonScenario("json-quota", "JSON: 500 units, 20 ms latency, 6,000/min quota", 500)
    startup = StartupScenario("startup", "start-up: --help; --dry-run of 10,000 units", 10_000, 10)
    if quick:
        large = replace(large, title="4 × 32 MiB into the local lake", files=4, file_size=32 * MiB)
        small = replace(small, title="150 × 200 KiB into the local lake", files=150)
        single = replace(single, title="1 × 256 MiB into the local lake (flat RSS)", file_size=256 * MiB)
        json_ = replace(json_, title="JSON: 200 units, 20 ms latency, 6,000/min quota", units=200)
        startup = replace(startup, repeats=5)
    length = replace(large, name="bulk-large-local-length", title=large.title + ", `verify: length`", verify="length")
    latency = LatencyScenario("latency-mixed", "3-date backfill of a mixed job, 150 ms latency, 4 MiB/s per connection")
    if quick:
        latency = replace(latency, title=latency.title.replace("3-date", "1-date"), dates=latency.dates[-1:])
    return [
        large, length, _into_s3(large, "moto"), _into_s3(large, "seaweedfs"),
        small, _into_s3(small, "moto"), _into_s3(small, "seaweedfs"),
        single, json_, latency, startup,
    ]  # fmt: skip


def _into_s3(scenario: BulkScenario, server: S3Server) -> BulkScenario:
    """`bulk-…-s3` into moto; `bulk-…-s3-seaweedfs` into SeaweedFS."""
    name = scenario.name.replace("-local", "-s3") + ("" if server == "moto" else f"-{server}")
    title = scenario.title.replace("the local lake", f"S3 ({S3_SERVER_TITLES[server]})")
    return replace(scenario, name=name, title=title, dest="s3", s3_server=server)
