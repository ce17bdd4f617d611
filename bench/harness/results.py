"""Results: one record per measured run, and the per-contender summary (median and spread).

A run whose output failed verification is kept (and reported) but never counts in a summary.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

GB = 1e9
MB = 1e6


@dataclass
class RunResult:
    scenario: str
    contender: str
    round: int
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_bytes: int
    verified: bool
    objects: int
    problems: list[str] = field(default_factory=list)
    server_cpu_s: dict[str, float] = field(default_factory=dict)
    http_429: int | None = None
    sync_s: float = 0.0  # a `sync` right after the run: what it left for the kernel to write back

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "cpu_s": round(self.cpu_s, 3)}


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    @property
    def relative(self) -> float:
        """(max − min) / median: how much the rounds disagree."""
        return (self.high - self.low) / self.median if self.median else 0.0


@dataclass
class Summary:
    """One contender in one scenario, over its verified runs."""

    scenario: str
    contender: str
    label: str
    bytes_moved: int
    runs: int
    failed_runs: int
    wall_s: Spread
    cpu_s: Spread
    peak_rss_bytes: Spread
    server_cpu_s: dict[str, float]  # medians by server
    http_429: Spread | None = None
    durable_s: Spread | None = None  # wall time plus the `sync` after it

    @property
    def throughput_mb_s(self) -> float:
        return self.bytes_moved / MB / self.wall_s.median

    @property
    def durable_mb_s(self) -> float:
        return self.bytes_moved / MB / (self.durable_s or self.wall_s).median

    @property
    def cpu_s_per_gb(self) -> float:
        return self.cpu_s.median / (self.bytes_moved / GB)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "contender": self.contender,
            "label": self.label,
            "bytes_moved": self.bytes_moved,
            "runs": self.runs,
            "failed_runs": self.failed_runs,
            "throughput_mb_s": round(self.throughput_mb_s, 1),
            "durable_mb_s": round(self.durable_mb_s, 1),
            "durable_s": _rounded(self.durable_s, 3) if self.durable_s is not None else None,
            "wall_s": _rounded(self.wall_s, 3),
            "cpu_s": _rounded(self.cpu_s, 3),
            "cpu_s_per_gb": round(self.cpu_s_per_gb, 3),
            "peak_rss_mb": _rounded(Spread(*(v / MB for v in asdict(self.peak_rss_bytes).values())), 1),
            "server_cpu_s": self.server_cpu_s,
            "http_429": _rounded(self.http_429, 0) if self.http_429 is not None else None,
        }


def _rounded(spread: Spread, digits: int) -> dict[str, float]:
    return {k: round(v, digits) for k, v in asdict(spread).items()}


def summarize(scenario: str, contender: str, label: str, bytes_moved: int, runs: list[RunResult]) -> Summary | None:
    good = [r for r in runs if r.verified]
    if not good:
        return None
    servers = sorted({name for r in good for name in r.server_cpu_s})
    return Summary(
        scenario=scenario,
        contender=contender,
        label=label,
        bytes_moved=bytes_moved,
        runs=len(good),
        failed_runs=len(runs) - len(good),
        wall_s=Spread.of([r.wall_s for r in good]),
        cpu_s=Spread.of([r.cpu_s for r in good]),
        peak_rss_bytes=Spread.of([float(r.peak_rss_bytes) for r in good]),
        server_cpu_s={s: round(statistics.median([r.server_cpu_s.get(s, 0.0) for r in good]), 2) for s in servers},
        http_429=Spread.of([float(r.http_429) for r in good]) if all(r.http_429 is not None for r in good) else None,
        durable_s=Spread.of([r.wall_s + r.sync_s for r in good]),
    )


@dataclass
class StartupResult:
    """Wall times of repeated start-up commands (seconds), by command."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    peak_rss_bytes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def spread(self, command: str) -> Spread | None:
        values = self.samples.get(command)
        return Spread.of(values) if values else None

    def to_json(self) -> dict[str, Any]:
        return {
            name: {**_rounded(Spread.of(v), 4), "samples": [round(x, 4) for x in v], "peak_rss_mb": round(self.peak_rss_bytes.get(name, 0) / MB, 1)}
            for name, v in self.samples.items()
        } | {"notes": self.notes}
