"""The report: a Markdown table per scenario, the targets with where we stand, and a JSON twin."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .results import MB, RunResult, StartupResult, Summary
from .scenarios import BulkScenario, JsonScenario, LatencyScenario, Scenario

HELP_TARGET_S = 0.150
DRY_RUN_TARGET_S = 1.0
RSS_TARGET_BYTES = 100 * MB
JSON_FLOOR_FACTOR = 1.1
LATENCY_FACTOR = 1.3  # wall time against the computed critical path
# S3 CPU/GB against the local lake's, same files and checks: large files, small objects
S3_CPU_FACTORS = {"bulk-large": 1.1, "bulk-small": 1.5}
# Per scenario: apilake's throughput against other contenders (≥ ratio), its CPU ceilings.
THROUGHPUT_TARGETS = {
    "bulk-large-local-length": {"original": 1.0, "limit": 0.8},
    "bulk-small-local": {"original": 1.0},
}
CPU_S_PER_GB_TARGETS = {"bulk-large-local-length": 1.0, "bulk-large-local": 3.0}
CPU_MS_PER_FILE_TARGETS = {"bulk-small-local": 1.5}

HELP_COMMAND = "apilake --help"
DRY_RUN_COMMAND = "apilake run --dry-run (10,000 units)"


@dataclass
class ScenarioReport:
    scenario: Scenario
    summaries: list[Summary]
    runs: list[RunResult]
    notes: list[str]

    def get(self, contender: str) -> Summary | None:
        return next((s for s in self.summaries if s.contender == contender), None)


@dataclass(frozen=True)
class Target:
    target: str
    measured: str
    met: bool | None  # None: could not be measured


def _mark(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "n/a"}[met]


def _binary_size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} B"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def targets(reports: list[ScenarioReport], startup: StartupResult | None) -> list[Target]:
    rows: list[Target] = []
    by_name = {rep.scenario.name: rep for rep in reports}
    for rep in reports:
        sc = rep.scenario
        me = rep.get("apilake")
        if isinstance(sc, BulkScenario):
            for other, want in THROUGHPUT_TARGETS.get(sc.name, {}).items():
                them = rep.get(other)
                if me is None or them is None:
                    rows.append(Target(f"{sc.name}: throughput ≥ {want:g}× {other}", "not measured", None))
                    continue
                ratio = me.throughput_mb_s / them.throughput_mb_s
                durable = me.durable_mb_s / them.durable_mb_s
                rows.append(Target(
                    f"{sc.name}: throughput ≥ {want:g}× {other}",
                    f"{ratio:.2f}× ({me.throughput_mb_s:.0f} vs {them.throughput_mb_s:.0f} MB/s); durable {durable:.2f}×",
                    ratio >= want,
                ))  # fmt: skip
            if me is not None and sc.name in CPU_S_PER_GB_TARGETS:
                limit = CPU_S_PER_GB_TARGETS[sc.name]
                rows.append(Target(f"{sc.name}: CPU ≤ {limit:g} s/GB", f"{me.cpu_s_per_gb:.2f} s/GB", me.cpu_s_per_gb <= limit))
            if me is not None and sc.name in CPU_MS_PER_FILE_TARGETS:
                limit = CPU_MS_PER_FILE_TARGETS[sc.name]
                per_file = me.cpu_s.median / sc.files * 1000
                rows.append(Target(f"{sc.name}: CPU ≤ {limit:g} ms per file", f"{per_file:.2f} ms", per_file <= limit))
            local = by_name.get(sc.local_name)
            if me is not None and sc.dest == "s3" and local is not None and (mine := local.get("apilake")) is not None:
                ratio = me.cpu_s_per_gb / mine.cpu_s_per_gb
                factor = next(f for prefix, f in S3_CPU_FACTORS.items() if sc.name.startswith(prefix))
                rows.append(Target(
                    f"{sc.name}: CPU/GB ≤ {factor:g}× the local lake's",
                    f"{ratio:.2f}× ({me.cpu_s_per_gb:.2f} vs {mine.cpu_s_per_gb:.2f} s/GB)",
                    ratio <= factor,
                ))  # fmt: skip
            if me is not None:
                rss = me.peak_rss_bytes.high
                size = f"{_binary_size(sc.file_size)} files"
                rows.append(Target(f"{sc.name}: peak RSS < 100 MB ({size})", f"{rss / MB:.0f} MB (max of rounds)", rss < RSS_TARGET_BYTES))
        elif isinstance(sc, LatencyScenario) and me is not None:
            factor = me.wall_s.median / sc.critical_path_s
            rows.append(Target(
                f"{sc.name}: wall ≤ {LATENCY_FACTOR:g}× critical path ({sc.critical_path_s:.2f} s)",
                f"{me.wall_s.median:.2f} s = {factor:.2f}×",
                factor <= LATENCY_FACTOR,
            ))  # fmt: skip
        elif isinstance(sc, JsonScenario) and me is not None:
            factor = me.wall_s.median / sc.floor_s
            rows.append(
                Target(
                    f"{sc.name}: wall ≤ {JSON_FLOOR_FACTOR}× quota floor ({sc.floor_s:g} s)",
                    f"{me.wall_s.median:.2f} s = {factor:.2f}×",
                    factor <= JSON_FLOOR_FACTOR,
                )
            )
            if me.http_429 is not None:
                rows.append(Target(f"{sc.name}: zero 429s", f"{me.http_429.high:.0f} (max of rounds)", me.http_429.high == 0))
    if startup is not None:
        for command, limit in ((HELP_COMMAND, HELP_TARGET_S), (DRY_RUN_COMMAND, DRY_RUN_TARGET_S)):
            spread = startup.spread(command)
            if spread is not None:
                rows.append(Target(f"`{command}` < {_ms(limit)} ms", f"{_ms(spread.median)} ms", spread.median < limit))
    return rows


def _machine_lines(machine: dict[str, Any]) -> list[str]:
    ram = f", {machine['ram_gib']} GiB RAM" if machine.get("ram_gib") else ""
    lines = [
        f"- **Machine:** {machine['cpu']}, {machine['cores']} cores{ram}; {machine['os']}; Python {machine['python']}",
        f"- **Date:** {machine['date']}; apilake {machine.get('apilake_commit') or '(no git)'}",
        f"- **Disk:** {machine.get('workdir_fs') or 'unknown'} (lakes, temp files and curl's output); servers on 127.0.0.1",
        f"- **Tools:** {machine.get('rclone') or 'rclone not installed'}; {machine.get('curl') or 'curl not installed'}",
    ]
    if machine.get("load_at_start"):
        load = ", ".join(f"{x:g}" for x in machine["load_at_start"])
        lines.append(f"- **Load average at start (1, 5, 15 min):** {load}; above ~0.5 the machine was shared and wall and CPU figures are inflated")
    return lines


def _scenario_table(rep: ScenarioReport) -> list[str]:
    """Bulk: MB/s and CPU s per GB. JSON: units/s and CPU ms per unit, the quota floor, and 429s."""
    sc = rep.scenario
    me = rep.get("apilake")
    is_json = isinstance(sc, JsonScenario)
    servers = ["emulator", sc.s3_server] if isinstance(sc, BulkScenario) and sc.dest == "s3" else ["emulator"]
    rate, cost = ("units/s", "CPU ms/unit") if is_json else ("MB/s", "CPU s/GB")
    columns = ["contender", rate, "wall s, median (min–max)", "durable MB/s (with sync)", "CPU s", cost, "peak RSS MB"]
    columns += [f"{name} CPU s" for name in servers] + ["apilake ×"] + (["429s, median (max)"] if is_json else [])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for s in rep.summaries:
        if isinstance(sc, JsonScenario):
            speed, per = f"{sc.units / s.wall_s.median:,.1f}", f"{s.cpu_s.median / sc.units * 1000:.2f}"
        else:
            speed, per = f"{s.throughput_mb_s:,.1f}", f"{s.cpu_s_per_gb:.2f}"
        cells = [
            s.label,
            speed,
            f"{s.wall_s.median:.2f} ({s.wall_s.low:.2f}–{s.wall_s.high:.2f})",
            f"{s.durable_mb_s:,.1f}",
            f"{s.cpu_s.median:.2f}",
            per,
            f"{s.peak_rss_bytes.median / MB:.0f}",
            *(f"{s.server_cpu_s.get(name, 0):.2f}" for name in servers),
            f"{me.throughput_mb_s / s.throughput_mb_s:.2f}×" if me is not None and s is not me else "—",
        ]
        if is_json:
            cells.append(f"{s.http_429.median:.0f} ({s.http_429.high:.0f})" if s.http_429 is not None else "—")
        lines.append("| " + " | ".join(cells) + " |")
    if isinstance(sc, JsonScenario):
        versus = f"apilake at {me.wall_s.median / sc.floor_s:.2f}× the floor" if me is not None else "—"
        cells = [f"quota floor ({sc.units} / {sc.per_second} per s)", f"{sc.per_second:,.1f}", f"{sc.floor_s:.2f}"]
        cells += ["—"] * (len(columns) - 5) + [versus, "0"]
        lines.append("| " + " | ".join(cells) + " |")
    elif isinstance(sc, LatencyScenario):
        chains = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in sc.chains_s().items())
        versus = f"apilake at {me.wall_s.median / sc.critical_path_s:.2f}×" if me is not None else "—"
        cells = [f"critical path: max(longest chain, work {sc.work_s():.2f} slot-s / {sc.concurrency} slots)", "—",
                 f"{sc.critical_path_s:.2f}"] + ["—"] * (len(columns) - 4) + [versus]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(f"Chains: {chains}; {sc.expected_objects} objects over {len(sc.dates)} dates.")
    return lines


def _startup_table(startup: StartupResult) -> list[str]:
    lines = ["| command | median ms | min–max ms | peak RSS MB | target |", "|---|---|---|---|---|"]
    for command, limit in ((HELP_COMMAND, HELP_TARGET_S), (DRY_RUN_COMMAND, DRY_RUN_TARGET_S)):
        spread = startup.spread(command)
        if spread is None:
            continue
        rss = startup.peak_rss_bytes.get(command, 0) / MB
        lines.append(f"| `{command}` | {_ms(spread.median)} | {_ms(spread.low)}–{_ms(spread.high)} | {rss:.0f} | < {_ms(limit)} ms |")
    return lines


def render_markdown(machine: dict[str, Any], settings: dict[str, Any], reports: list[ScenarioReport], startup: StartupResult | None) -> str:
    out = ["# apilake benchmark", ""]
    out += _machine_lines(machine)
    out += [f"- **Run:** `{settings['command']}`: {settings['rounds']} rounds, contenders alternating in each round; "
            "medians over verified runs (min–max in brackets)", ""]  # fmt: skip
    rows = targets(reports, startup)
    if rows:
        out += ["## Targets", "", "| target | measured | |", "|---|---|---|"]
        out += [f"| {t.target} | {t.measured} | {_mark(t.met)} |" for t in rows]
        out.append("")
    if NOTES.exists() and any(t.met is False for t in rows):
        out += ["## Why the misses", "", NOTES.read_text().strip(), ""]
    for rep in reports:
        sc = rep.scenario
        size = f"{sc.total_bytes / MB:,.1f} MB" if isinstance(sc, BulkScenario | JsonScenario | LatencyScenario) else ""
        out += [f"## {sc.title}", "", f"`{sc.name}`: {size} moved per run.", ""]
        out += _scenario_table(rep)
        failed = [r for r in rep.runs if not r.verified]
        notes = list(rep.notes) + [f"{r.contender} round {r.round}: not counted: {'; '.join(r.problems)}" for r in failed]
        if notes:
            out += [""] + [f"- {n}" for n in notes]
        out.append("")
    if startup is not None:
        out += ["## Start-up", "", *_startup_table(startup), ""]
        out += [f"- {n}" for n in startup.notes]
        out.append("")
    out += [
        "## How to read this",
        "",
        "- Each contender runs as a child process; wall time, CPU (user + system) and peak RSS come from",
        "  `wait4` for that process and every process it started. The emulator and the S3 server (moto, or",
        "  SeaweedFS for `…-s3-seaweedfs`) run in their own processes; their CPU during the run is shown separately.",
        "- A run counts only if every expected object landed byte-identical (sha256) and nothing else did.",
        "- MB = 10^6 bytes; MB/s = bytes moved / median wall time; CPU s/GB = median CPU s per 10^9 bytes.",
        "- `apilake ×` = apilake's throughput divided by that contender's (above 1: apilake is faster).",
        "- rclone and curl get the listing's URLs from the harness (one JSON call, untimed); apilake and",
        "  the original pattern make the listing call themselves.",
        "- rclone 1.60 cannot copy a list of signed URLs in one process: it runs one `rclone copyurl` per",
        "  file (4 at a time), so with small files its numbers are mostly rclone's own start-up (~50 ms CPU each).",
        "- The S3 servers are reached over plain HTTP, so boto3 (apilake, original, S3 limit) signs a sha256 of every",
        "  payload (SigV4); over HTTPS to AWS it would not. rclone sends unsigned payloads.",
        "- JSON: the emulator enforces the 6,000/min quota as 100 calls in any 1-second window (so the",
        "  floor is units / 100 s); apilake's job sets `requests_per_second: 100` as a user would.",
        "- apilake fsyncs every object before renaming it into place; curl, rclone and the original do not.",
        "  So every run is followed by a timed `sync`: *durable MB/s* counts it, so nobody wins by",
        "  leaving dirty pages for the kernel to write back.",
        "- `verify: gzip` (apilake's default) inflates every .gz file to its end before it may land;",
        "  `verify: length` (`…-length` scenario) checks Content-Length and the crc32c only. The other",
        "  contenders check nothing.",
        "- latency-mixed: only apilake runs (the others cannot run a mixed job); its objects are checked",
        "  by count, its bulk files by sha256. The critical path is computed from the emulator's",
        "  settings: the longest chain of dependent requests, or all requests' slot-seconds over the",
        "  source's `concurrency` slots, whichever is longer.",
        "",
    ]
    return "\n".join(out)


def render_json(machine: dict[str, Any], settings: dict[str, Any], reports: list[ScenarioReport], startup: StartupResult | None) -> str:
    doc = {
        "machine": machine,
        "settings": settings,
        "targets": [t.__dict__ for t in targets(reports, startup)],
        "scenarios": [
            {
                "name": rep.scenario.name,
                "title": rep.scenario.title,
                "bytes_moved": getattr(rep.scenario, "total_bytes", None),
                "summaries": [s.to_json() for s in rep.summaries],
                "runs": [r.to_json() for r in rep.runs],
                "notes": rep.notes,
                **({"floor_s": rep.scenario.floor_s} if isinstance(rep.scenario, JsonScenario) else {}),
            }
            for rep in reports
        ],
        "startup": startup.to_json() if startup is not None else None,
        "notes": NOTES.read_text() if NOTES.exists() else None,
    }
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


NOTES = Path(__file__).resolve().parent.parent / "results" / "notes.md"  # hand-written, profile-based


def update_readme(readme: Path, markdown: str, section: str = "latest") -> None:
    """Replace a section's results between its markers in bench/README.md (headings shifted down)."""
    start, end = f"<!-- bench:{section}:start -->", f"<!-- bench:{section}:end -->"
    text = readme.read_text()
    if start not in text or end not in text:
        return
    body = "\n".join(("#" + line if line.startswith("#") else line) for line in markdown.splitlines()[1:])
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    readme.write_text(f"{before}{start}\n{body.strip()}\n{end}{after}")


def concise(rows: Iterable[Target]) -> str:
    return "\n".join(f"  {_mark(t.met):>10}  {t.target}: {t.measured}" for t in rows)
