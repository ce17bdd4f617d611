"""The tables benchmarks: `.venv-bench/bin/python bench/tables.py [--quick] [--scenario NAME]`.

Lands each scenario's raw zone once, then times `apilake tables` against DuckDB on the same raw
objects, round after round, and writes bench/results/tables.md and tables.json (`--quick`:
tables-quick.*). See bench/README.md and harness/tables.py.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.machine import describe_machine
from harness.report import concise, update_readme
from harness.tables import TablesBench, duckdb_version, log, tables_scenarios
from harness.tables_report import render_tables_json, render_tables_markdown, tables_targets
from run import compile_apilake

BENCH = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="bench/tables.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes and 2 rounds")
    p.add_argument("--rounds", type=int, help="rounds per scenario (default 3; 2 with --quick)")
    p.add_argument("--scenario", action="append", metavar="NAME", help="run only this scenario (repeatable)")
    p.add_argument("--workdir", type=Path, help="where lakes and outputs go (default: a new folder under $TMPDIR)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = p.parse_args(args_list)
    scenarios = tables_scenarios(quick=args.quick)
    if args.list:
        for s in scenarios:
            print(f"{s.name:<16} {s.title}")
        return 0
    if args.scenario:
        if unknown := set(args.scenario) - {s.name for s in scenarios}:
            raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))} (see --list)")
        scenarios = [s for s in scenarios if s.name in args.scenario]
    rounds = args.rounds or (2 if args.quick else 3)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="apilake-tables-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    shown = [a for i, a in enumerate(args_list) if a != "--workdir" and (i == 0 or args_list[i - 1] != "--workdir")]  # no local paths
    settings = {"command": ("bench/tables.py " + " ".join(shown)).strip(), "rounds": rounds, "quick": args.quick,
                "duckdb": duckdb_version()}  # fmt: skip
    machine = describe_machine(workdir)
    compile_apilake()
    started = time.monotonic()
    try:
        bench = TablesBench(rounds, workdir)
        reports = [bench.run(s) for s in scenarios]
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    settings["seconds"] = round(time.monotonic() - started)
    stem = "tables-quick" if args.quick else "tables"
    markdown = render_tables_markdown(machine, settings, reports)
    out = BENCH / "results"
    (out / f"{stem}.md").write_text(markdown)
    (out / f"{stem}.json").write_text(render_tables_json(machine, settings, reports))
    if not args.quick:
        update_readme(BENCH / "README.md", markdown, section="tables")
    log(f"\ntargets:\n{concise(tables_targets(reports))}")
    log(f"\nwrote {out / (stem + '.md')} and .json in {settings['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
