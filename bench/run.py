"""apilake's benchmark harness: `make bench` (or `.venv/bin/python bench/run.py [--quick]`).

Starts its own vendor emulator (and, for S3, a moto server and SeaweedFS) on loopback, runs every scenario with
every contender in alternation for several rounds, verifies each run's output before its time
counts, and writes bench/results/latest.md and latest.json (`--quick`: quick.md / quick.json).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TypeGuard

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.contenders import VENV_BIN, Apilake, Contender, Limit, Original, Rclone, Setup, job_document
from harness.machine import describe_machine
from harness.measure import run_measured
from harness.report import (
    DRY_RUN_COMMAND,
    HELP_COMMAND,
    ScenarioReport,
    concise,
    render_json,
    render_markdown,
    targets,
    update_readme,
)
from harness.results import RunResult, StartupResult, summarize
from harness.scenarios import (
    DATE,
    TOKEN,
    BulkScenario,
    JsonScenario,
    LatencyScenario,
    Scenario,
    StartupScenario,
    default_scenarios,
)
from harness.servers import EmulatorProcess, MotoProcess, S3Server, SeaweedFSProcess, bench_env, s3_client
from harness.verify import Verdict, clear_local, clear_s3, verify_count, verify_local, verify_s3

BENCH = Path(__file__).resolve().parent
BUCKET = "bench"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Bench:
    """Runs scenarios against contenders; owns the S3 servers (by name, each with a bucket) and the work folder."""

    def __init__(self, contenders: list[Contender], rounds: int, workdir: Path, s3_servers: dict[str, S3Server]) -> None:
        self.contenders = contenders
        self.rounds = rounds
        self.workdir = workdir
        self.s3_servers = s3_servers
        self.s3 = {name: s3_client(server.endpoint_url) for name, server in s3_servers.items()}
        for client in self.s3.values():
            client.create_bucket(Bucket=BUCKET)

    # -- bulk and JSON -----------------------------------------------------------------------
    def run_scenario(self, scenario: BulkScenario | JsonScenario | LatencyScenario) -> ScenarioReport:
        log(f"\n== {scenario.name}: {scenario.title}")
        notes: list[str] = []
        active: list[Contender] = []
        for c in self.contenders:
            reason = c.skip_reason(scenario)
            if reason is None:
                active.append(c)
            elif reason != "not applicable":
                notes.append(f"{c.label(scenario)}: {reason}")
        started = time.monotonic()
        expected = scenario.expected_files() if isinstance(scenario, LatencyScenario) else scenario.expected()
        log(f"   expected digests ready ({time.monotonic() - started:.1f} s)")
        runs: list[RunResult] = []
        with EmulatorProcess(scenario.emulator_config()) as emulator:
            setup = self._setup(scenario, emulator)
            for round_ in range(1, self.rounds + 1):
                for contender in active:
                    result = self._run_once(scenario, setup, contender, round_, expected)
                    runs.append(result)
                    status = "ok" if result.verified else "NOT COUNTED: " + "; ".join(result.problems)
                    log(f"   round {round_} {contender.name:<9} {result.wall_s:7.2f} s  cpu {result.cpu_s:6.2f} s  "
                        f"rss {result.peak_rss_bytes / 1e6:6.0f} MB  {status}")  # fmt: skip
        summaries = []
        for c in active:
            s = summarize(scenario.name, c.name, c.label(scenario), scenario.total_bytes, [r for r in runs if r.contender == c.name])
            if s is not None:
                summaries.append(s)
        return ScenarioReport(scenario, summaries, runs, notes)

    def _setup(self, scenario: BulkScenario | JsonScenario | LatencyScenario, emulator: EmulatorProcess) -> Setup:
        s3_endpoint = self.s3_servers[scenario.s3_server].endpoint_url if _into_s3(scenario) else None
        setup = Setup(emulator, self.workdir, s3_endpoint)
        if isinstance(scenario, BulkScenario):
            listing = httpx.get(emulator.api_url + scenario.listing_path, headers={"Authorization": f"Bearer {TOKEN}"})
            listing.raise_for_status()
            setup.listing_urls = tuple(listing.json()["data"]["urls"])
            if scenario.dest == "s3":
                setup.staged_dir = self._stage(scenario)
        return setup

    def _stage(self, scenario: BulkScenario) -> Path:
        """The scenario's files on local disk (untimed), for the S3 ingest limit."""
        from apilake.emulator import iter_file_chunks

        staged = self.workdir / "staged"
        clear_local(staged)
        for name in scenario.names:
            path = staged / name
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                for chunk in iter_file_chunks(name, scenario.file_size):
                    f.write(chunk)
        os.sync()
        return staged

    def _run_once(
        self, scenario: BulkScenario | JsonScenario | LatencyScenario, setup: Setup, contender: Contender, round_: int, expected: Counter[str]
    ) -> RunResult:
        scratch = self.workdir / "scratch"
        clear_local(scratch)
        scratch.mkdir(parents=True)
        if scenario.dest == "s3":
            dest = f"s3://{BUCKET}/{contender.name}-{round_}"
        else:
            dest = str(self.workdir / "lake")
            clear_local(Path(dest))
        command = contender.command(scenario, setup, dest, scratch)
        os.sync()  # the previous run's dirty pages must not be written back during this one
        rejected_before = self._http_429(setup) if isinstance(scenario, JsonScenario) else 0
        if isinstance(scenario, JsonScenario):
            time.sleep(1.2)  # let the quota's 1-second window empty
        servers = {"emulator": setup.emulator.cpu_seconds}
        if _into_s3(scenario):
            servers[scenario.s3_server] = self.s3_servers[scenario.s3_server].cpu_seconds
        m = run_measured(command.argv, env=command.env, cwd=scratch, servers=servers)
        synced = time.monotonic()
        os.sync()  # what the contender left for the kernel to write back: the durable figure counts it
        sync_s = time.monotonic() - synced
        http_429 = self._http_429(setup) - rejected_before if isinstance(scenario, JsonScenario) else None
        if m.exit_code != 0:
            verdict = Verdict(0, (f"exit code {m.exit_code}: {m.output.strip()[-600:]}",))
        elif isinstance(scenario, LatencyScenario):
            verdict = verify_count(Path(dest), scenario.expected_objects, expected)
        elif _into_s3(scenario):
            verdict = verify_s3(self.s3[scenario.s3_server], dest, expected)
        else:
            verdict = verify_local(Path(dest), expected)
        if _into_s3(scenario):
            clear_s3(self.s3[scenario.s3_server], dest)
        else:
            clear_local(Path(dest))
        clear_local(scratch)
        return RunResult(
            scenario.name, contender.name, round_, round(m.wall_s, 4), round(m.user_s, 3), round(m.sys_s, 3),
            m.peak_rss_bytes, verdict.ok, verdict.objects, list(verdict.problems), m.server_cpu_s, http_429,
            round(sync_s, 4),
        )  # fmt: skip

    @staticmethod
    def _http_429(setup: Setup) -> int:
        stats = httpx.get(setup.emulator.api_url + "/_emulator/stats").json()
        return int(stats["by_status"].get("api:429", 0))

    # -- start-up ----------------------------------------------------------------------------
    def run_startup(self, scenario: StartupScenario) -> StartupResult:
        log(f"\n== {scenario.name}: {scenario.title}")
        result = StartupResult()
        scratch = self.workdir / "startup"
        clear_local(scratch)
        scratch.mkdir(parents=True)
        with EmulatorProcess({}) as emulator:  # only its URL goes into the job file: a dry run makes no call
            job = job_document(_matrix_scenario(scenario), Setup(emulator, self.workdir), str(scratch / "lake"), None)
        path = scratch / "job.yaml"
        path.write_text(yaml.safe_dump(job, sort_keys=False))
        apilake = str(VENV_BIN / "apilake")
        commands = {
            HELP_COMMAND: [apilake, "--help"],
            DRY_RUN_COMMAND: [apilake, "run", str(path), "--dry-run", "--date", DATE],
        }
        env = bench_env({"DATAAI_TOKEN": TOKEN})
        for argv in commands.values():
            run_measured(argv, env=env, cwd=scratch)  # one untimed run: bytecode caches, page cache
        for _ in range(scenario.repeats):
            for name, argv in commands.items():  # alternating, like the bulk contenders
                m = run_measured(argv, env=env, cwd=scratch)
                if m.exit_code != 0:
                    result.notes.append(f"`{name}` exited {m.exit_code}: {m.output.strip()[-300:]}")
                    continue
                if name == DRY_RUN_COMMAND and f"{scenario.units} unit(s)" not in m.output:
                    result.notes.append(f"`{name}` did not report {scenario.units} units: {m.output.strip()[-200:]}")
                    continue
                result.samples.setdefault(name, []).append(m.wall_s)
                result.peak_rss_bytes[name] = max(result.peak_rss_bytes.get(name, 0), m.peak_rss_bytes)
        for name, values in result.samples.items():
            log(f"   {name}: median {sorted(values)[len(values) // 2] * 1000:.0f} ms over {len(values)} runs")
        clear_local(scratch)
        return result


def _into_s3(scenario: Scenario) -> TypeGuard[BulkScenario]:
    """Whether the scenario lands into one of the harness's S3 servers (only bulk scenarios do)."""
    return isinstance(scenario, BulkScenario) and scenario.dest == "s3"


def _matrix_scenario(scenario: StartupScenario) -> JsonScenario:
    """A JSON scenario whose job expands to `scenario.units` units (one date, one matrix)."""
    return JsonScenario(scenario.name, scenario.title, scenario.units)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes and 2 rounds (about 2 minutes)")
    p.add_argument("--rounds", type=int, help="rounds per scenario (default 3; 2 with --quick)")
    p.add_argument("--scenario", action="append", metavar="NAME", help="run only this scenario (repeatable)")
    p.add_argument("--contender", action="append", metavar="NAME", help="apilake, original, rclone, limit (repeatable)")
    p.add_argument("--apilake-concurrency", type=int, help="set the source's `concurrency` in apilake's job (default: apilake's default)")
    p.add_argument("--patch", action="append", metavar="NAME", help="add a contender: apilake with the experiment bench/patches/NAME loaded")
    p.add_argument("--workdir", type=Path, help="where lakes and temp files go (default: a new folder under $TMPDIR)")
    p.add_argument("--out", help="results file stem under bench/results (default: latest; quick with --quick)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return p.parse_args(argv)


def compile_apilake() -> None:
    """Byte-compile apilake as `pip install` does. From a source checkout (an editable install)
    with PYTHONDONTWRITEBYTECODE set, every apilake process would otherwise compile each of its
    modules at start-up, a cost no installed copy pays."""
    import compileall

    import apilake

    compileall.compile_dir(Path(apilake.__file__).parent, quiet=1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    scenarios: list[Scenario] = default_scenarios(quick=args.quick)
    if args.list:
        for s in scenarios:
            print(f"{s.name:<24} {s.title}")
        return 0
    if args.scenario:
        unknown = set(args.scenario) - {s.name for s in scenarios}
        if unknown:
            raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))} (see --list)")
        scenarios = [s for s in scenarios if s.name in args.scenario]
    patched = [Apilake(args.apilake_concurrency, patch) for patch in args.patch or []]
    contenders: list[Contender] = [Apilake(args.apilake_concurrency), *patched, Original(), Rclone(), Limit()]
    if args.contender:
        contenders = [c for c in contenders if c.name in args.contender or c.name.startswith("apilake+")]
    rounds = args.rounds or (2 if args.quick else 3)
    stem = args.out or ("quick" if args.quick else "latest")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="apilake-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    command = "bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv) if (argv or sys.argv[1:]) else "make bench"
    settings = {"command": command.strip(), "rounds": rounds, "quick": args.quick, "apilake_concurrency": args.apilake_concurrency, "patches": args.patch or []}
    machine = describe_machine(workdir)
    compile_apilake()
    started = time.monotonic()
    s3_servers: dict[str, S3Server] = {}
    try:
        for name in dict.fromkeys(s.s3_server for s in scenarios if _into_s3(s)):
            s3_servers[name] = MotoProcess() if name == "moto" else SeaweedFSProcess()
        bench = Bench(contenders, rounds, workdir, s3_servers)
        reports: list[ScenarioReport] = []
        startup: StartupResult | None = None
        for scenario in scenarios:
            if isinstance(scenario, StartupScenario):
                startup = bench.run_startup(scenario)
            else:
                reports.append(bench.run_scenario(scenario))
    finally:
        for server in s3_servers.values():
            server.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    settings["seconds"] = round(time.monotonic() - started)
    markdown = render_markdown(machine, settings, reports, startup)
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    (out / f"{stem}.md").write_text(markdown)
    (out / f"{stem}.json").write_text(render_json(machine, settings, reports, startup))
    if stem == "latest":
        update_readme(BENCH / "README.md", markdown)
    log(f"\ntargets:\n{concise(targets(reports, startup))}")
    log(f"\nwrote {out / (stem + '.md')} and .json in {settings['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
