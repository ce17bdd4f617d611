"""Same bulk job, 1 vs N Dask workers: `.venv/bin/python bench/dask_scaling.py [--workers 1,2,4]`.

Starts the vendor emulator in its own process (16 × 8 MiB .csv.gz files by default, each served
at a capped per-connection rate like a remote object store; `--mib-per-s 0` removes the cap),
then for each worker count a fresh `distributed.LocalCluster` (worker processes, one thread each,
scheduler on loopback TCP) and times `apilake run --executor dask` into a fresh local lake, plus
the local executor for reference. Every run's lake is checked byte for byte before its time
counts. Prints a Markdown table (median of `--rounds`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

VENV_BIN = Path(sys.executable).parent
TOKEN = "bench-token"
DATE = "2026-11-25"
MIB = 1 << 20

EMULATOR = f"""
import sys, threading
from apilake.emulator import Emulator, EmulatorConfig, Fault
size, metric_files, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
faults = []
if rate > 0:  # 256 KiB pieces at `rate` MiB/s per connection
    faults = [Fault(match="name=", kind="drip", origin="files", chunk=256 * 1024, interval=0.25 / rate)]
config = EmulatorConfig(token={TOKEN!r}, file_size=size, metric_files=metric_files, dimensions=("product_id", "company_id"), faults=faults)
with Emulator(config=config) as emu:
    print(emu.api_url, flush=True)
    threading.Event().wait()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4", help="worker counts to compare (comma-separated)")
    parser.add_argument("--files", type=int, default=16, help="bulk files (14 metric + 2 dimension files by default)")
    parser.add_argument("--size-mib", type=float, default=8, help="MiB per file")
    parser.add_argument("--mib-per-s", type=float, default=16, help="per-connection rate of the file server (0: uncapped)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from distributed import LocalCluster

    size = int(args.size_mib * MIB)
    emulator = subprocess.Popen([sys.executable, "-c", EMULATOR, str(size), str(args.files - 2), str(args.mib_per_s)], stdout=subprocess.PIPE, text=True)
    work = Path(tempfile.mkdtemp(prefix="apilake-dask-bench-"))
    try:
        assert emulator.stdout is not None
        api_url = emulator.stdout.readline().strip()
        job = work / "job.yaml"
        job.write_text(yaml.safe_dump(job_document(api_url, work / "lake")))
        expected = expected_lake(size, args.files - 2)
        rows: list[tuple[str, int, float]] = []
        rows.append(("local", 0, timed(job, work / "lake", expected, args.rounds, [])))
        for n in [int(w) for w in args.workers.split(",")]:
            with LocalCluster(n_workers=n, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster:
                extra = ["--executor", "dask", "--scheduler", cluster.scheduler_address]
                rows.append(("dask", n, timed(job, work / "lake", expected, args.rounds, extra)))
        total = args.files * size / MIB
        cap = f"{args.mib_per_s:g} MiB/s per connection" if args.mib_per_s else "uncapped"
        print(f"\n{args.files} × {args.size_mib:g} MiB .csv.gz (file server {cap}), local lake, median of {args.rounds}, {os.cpu_count()} CPU(s)\n")
        print("| executor | workers × threads | wall time | throughput | vs 1 worker |")
        print("|---|---|---|---|---|")
        one = next((t for kind, n, t in rows if kind == "dask" and n == 1), None)
        for kind, n, seconds in rows:
            who = "in-process (concurrency 16)" if kind == "local" else f"{n} × 1"
            ratio = f"{one / seconds:.1f}×" if one and kind == "dask" else ""
            print(f"| {kind} | {who} | {seconds:.1f} s | {total / seconds:.0f} MiB/s | {ratio} |")
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def job_document(api_url: str, lake: Path) -> dict:
    return {
        "destination": str(lake),
        "concurrency": 16,
        "sources": [
            {
                "name": "vendor",
                "base_url": api_url,
                "token": "${BENCH_TOKEN}",
                "concurrency": 16,
                "endpoints": [
                    {
                        "name": "bulk",
                        "kind": "bulk",
                        "path": "/v2/bulk/get-bulk-urls",
                        "params": {"metric_bundles": "app_downloads", "granularity": "daily", "start_date": "{date}", "end_date": "{date}"},
                        "key": "{file_name}",
                    }
                ],
            }
        ],
    }


def expected_lake(size: int, metric_files: int) -> dict[str, str]:
    from apilake.emulator import EmulatorConfig, expected_file_names, file_sha256

    config = EmulatorConfig(file_size=size, metric_files=metric_files, dimensions=("product_id", "company_id"))
    return {name.rsplit("/", 1)[1]: file_sha256(name, size) for name in expected_file_names("app_downloads", DATE, DATE, "daily", config)}


def timed(job: Path, lake: Path, expected: dict[str, str], rounds: int, extra: list[str]) -> float:
    import hashlib

    times = []
    for _ in range(rounds):
        shutil.rmtree(lake, ignore_errors=True)
        started = time.perf_counter()
        result = subprocess.run(
            [str(VENV_BIN / "apilake"), "run", str(job), "--date", DATE, "-q", *extra], capture_output=True, text=True, env={**os.environ, "BENCH_TOKEN": TOKEN}
        )
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"run failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        landed = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in lake.iterdir() if p.is_file()}
        if landed != expected:
            raise SystemExit(f"the lake is not what the emulator served: {sorted(set(landed) ^ set(expected))}")
        times.append(seconds)
    return statistics.median(times)


if __name__ == "__main__":
    main()
