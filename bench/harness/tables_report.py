"""The tables benchmarks' report: targets, a Markdown table per scenario, and a JSON twin."""

from __future__ import annotations

import json
from typing import Any

from .report import NOTES, Target, _machine_lines, _mark
from .results import MB
from .tables import LABELS, TablesReport

#: apilake's throughput against DuckDB's on the same raw objects (≥ ratio), by scenario
VERSUS_DUCKDB = {"tables-bulk": 0.7, "tables-bulk-1g": 0.7, "tables-json": 0.5}
RSS_TARGETS = {"tables-bulk-1g": 400 * MB}
NOOP_TARGET_S = 1.0


def tables_targets(reports: list[TablesReport]) -> list[Target]:
    rows: list[Target] = []
    for rep in reports:
        sc, me, duck = rep.scenario, rep.get("apilake"), rep.get("duckdb")
        if sc.name in VERSUS_DUCKDB:
            want = VERSUS_DUCKDB[sc.name]
            if me is None or duck is None:
                rows.append(Target(f"{sc.name}: throughput ≥ {want:g}× DuckDB", "not measured", None))
            else:
                ratio = me.throughput_mb_s / duck.throughput_mb_s
                measured = f"{ratio:.2f}× ({me.throughput_mb_s:.1f} vs {duck.throughput_mb_s:.1f} MB/s of raw objects)"
                rows.append(Target(f"{sc.name}: throughput ≥ {want:g}× DuckDB", measured, ratio >= want))
        if sc.name in RSS_TARGETS and me is not None:
            limit = RSS_TARGETS[sc.name]
            rss = me.peak_rss_bytes.high
            rows.append(Target(f"{sc.name}: peak RSS < {limit / MB:.0f} MB ({sc.file_size >> 20} MiB .csv.gz)",
                               f"{rss / MB:.0f} MB (max of rounds)", rss < limit))  # fmt: skip
        if sc.shape == "noop" and me is not None:
            rows.append(Target(f"{sc.name}: no-op refresh of {sc.dates} dates × {sc.endpoints} endpoints < {NOOP_TARGET_S:g} s",
                               f"{me.wall_s.median:.2f} s", me.wall_s.median < NOOP_TARGET_S))  # fmt: skip
    return rows


def _scenario_table(rep: TablesReport) -> list[str]:
    me = rep.get("apilake")
    columns = ["contender", "MB/s of raw objects", "rows/s", "wall s, median (min–max)", "CPU s", "peak RSS MB", "apilake ×"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for s in rep.summaries:
        cells = [
            s.label,
            f"{s.throughput_mb_s:,.1f}",
            f"{rep.rows / s.wall_s.median:,.0f}" if rep.scenario.shape != "noop" else "—",
            f"{s.wall_s.median:.2f} ({s.wall_s.low:.2f}–{s.wall_s.high:.2f})",
            f"{s.cpu_s.median:.2f}",
            f"{s.peak_rss_bytes.median / MB:.0f}",
            f"{me.throughput_mb_s / s.throughput_mb_s:.2f}×" if me is not None and s is not me else "—",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_tables_markdown(machine: dict[str, Any], settings: dict[str, Any], reports: list[TablesReport]) -> str:
    out = ["# apilake tables benchmark", ""]
    out += [line for line in _machine_lines(machine) if not line.startswith("- **Tools:**")]
    out += [f"- **Tools:** DuckDB {settings['duckdb']} (Python package)",
            f"- **Run:** `{settings['command']}`: {settings['rounds']} rounds, contenders alternating in each round; "
            "medians over verified runs (min–max in brackets)", ""]  # fmt: skip
    rows = tables_targets(reports)
    out += ["## Targets", "", "| target | measured | |", "|---|---|---|"]
    out += [f"| {t.target} | {t.measured} | {_mark(t.met)} |" for t in rows]
    out.append("")
    for rep in reports:
        sc = rep.scenario
        out += [f"## {sc.title}", "", f"`{sc.name}`: {rep.input_bytes / MB:,.1f} MB of raw objects, {rep.rows:,} rows.", ""]
        out += _scenario_table(rep)
        failed = [r for r in rep.runs if not r.verified]
        notes = list(rep.notes) + [f"{r.contender} round {r.round}: not counted: {'; '.join(r.problems)}" for r in failed]
        out += ([""] + [f"- {n}" for n in notes]) if notes else []
        out.append("")
    out += [
        "## How to read this",
        "",
        "- The raw zone is landed once per scenario with `apilake run` (untimed). Then each contender",
        "  runs as a child process on the same raw objects: wall time, CPU and peak RSS from `wait4`.",
        f"- `{LABELS['apilake']}` builds the table from nothing each round (its catalog and warehouse are",
        "  removed first): Parquet files (zstd), the Iceberg metadata and the commit, with `_date`, the",
        "  unit's values and the lineage columns. DuckDB writes one zstd Parquet file with its",
        "  `filename` column; it keeps no catalog and no lineage of runs.",
        "- A run counts only if its output holds exactly the rows the emulator served.",
        "- MB/s = bytes of raw objects read (compressed, as landed) / median wall time.",
        "- The no-op refresh builds the tables once (untimed), then times `apilake tables` over every",
        "  date; it counts only if nothing under the catalog and warehouse changed.",
        "",
    ]
    return "\n".join(out)


def render_tables_json(machine: dict[str, Any], settings: dict[str, Any], reports: list[TablesReport]) -> str:
    doc = {
        "machine": machine,
        "settings": settings,
        "targets": [t.__dict__ for t in tables_targets(reports)],
        "scenarios": [
            {
                "name": rep.scenario.name,
                "title": rep.scenario.title,
                "input_bytes": rep.input_bytes,
                "rows": rep.rows,
                "summaries": [s.to_json() for s in rep.summaries],
                "runs": [r.to_json() for r in rep.runs],
                "notes": rep.notes,
            }
            for rep in reports
        ],
        "notes": NOTES.read_text() if NOTES.exists() else None,
    }
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
