"""Pages fetched ahead vs one after another: `.venv/bin/python bench/parallel_pages.py`.

Two paginated endpoints (`offset` and `page_number` paging) against the vendor emulator in its
own process, with a latency added to every answer as a remote API has, and the source's
`concurrency` the same in both runs. Once the job file does not say where the total is (so
each page tells only whether another follows: the pages go one after another, up to the empty
page that ends them), once it does (`total_path`, `total_pages_path`: the pages after the first
are fetched ahead). Both lakes must hold the same keys with the same bytes before a time
counts. Writes bench/results/parallel_pages.md (median of `--rounds`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

VENV_BIN = Path(sys.executable).parent
RESULTS = Path(__file__).parent / "results" / "parallel_pages.md"
DATE = "2026-11-25"

EMULATOR = """
import sys, threading
from apilake.emulator import Emulator, EmulatorConfig
with Emulator(config=EmulatorConfig(latency_ms=float(sys.argv[1]))) as emu:
    emu.acme.config.auth = "api_key_header"
    emu.acme.config.items = int(sys.argv[2])
    print(emu.api_url, flush=True)
    threading.Event().wait()
"""


def job(api_url: str, lake: Path, concurrency: int, limit: int, ahead: bool) -> dict:
    """The job; `ahead`: it says where page 1 tells the total."""
    offset = {"type": "offset", "limit": limit, "records_path": "data", **({"total_path": "total"} if ahead else {})}
    pages = {"type": "page_number", "records_path": "data", **({"total_pages_path": "meta.pages"} if ahead else {})}
    endpoints = [
        {"name": "offset", "kind": "json", "path": "/items/counted", "paginate": offset},
        {"name": "pages", "kind": "json", "path": "/items/pages", "paginate": pages},
    ]
    source = {
        "name": "acme",
        "base_url": api_url + "/acme",
        "concurrency": concurrency,
        "auth": {"type": "api_key", "name": "X-Api-Key", "value": "${ACME_KEY}"},
        "endpoints": endpoints,
    }
    return {"timezone": "UTC", "destination": str(lake), "sources": [source]}


def lake_bytes(lake: Path) -> dict[str, bytes]:
    return {
        p.relative_to(lake).as_posix(): p.read_bytes()
        for p in sorted(lake.rglob("*"))
        if p.is_file() and not p.relative_to(lake).as_posix().startswith("_apilake/")
    }


def timed_run(work: Path, api_url: str, concurrency: int, limit: int, ahead: bool, round_: int) -> tuple[float, dict[str, bytes]]:
    folder = work / f"{'ahead' if ahead else 'chain'}-r{round_}"
    folder.mkdir()
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job(api_url, folder / "lake", concurrency, limit, ahead), sort_keys=False))
    env = {**os.environ, "ACME_KEY": "acme-key-5e4d3c2b1a"}
    started = time.monotonic()
    result = subprocess.run([str(VENV_BIN / "apilake"), "run", str(path), "--date", DATE, "-q"], capture_output=True, text=True, env=env, check=False)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"apilake failed:\n{result.stdout}{result.stderr}")
    return seconds, lake_bytes(folder / "lake")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=100, help="added to every answer of the API")
    parser.add_argument("--pages", type=int, default=20, help="pages per endpoint")
    parser.add_argument("--concurrency", type=int, default=8, help="the source's concurrency for the parallel runs")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    limit = 10  # the emulator's page size for `page_number`, used for `offset` too
    items = args.pages * limit
    emulator = subprocess.Popen([sys.executable, "-c", EMULATOR, str(args.latency_ms), str(items)], stdout=subprocess.PIPE, text=True)
    work = Path(tempfile.mkdtemp(prefix="apilake-pages-bench-"))
    try:
        assert emulator.stdout is not None
        api_url = emulator.stdout.readline().strip()
        times: dict[bool, list[float]] = {False: [], True: []}
        landed: dict[bool, dict[str, bytes]] = {}
        for round_ in range(args.rounds):
            for ahead, seen in times.items():  # alternate, so a busy moment of the machine hits both
                seconds, landed[ahead] = timed_run(work, api_url, args.concurrency, limit, ahead, round_)
                seen.append(seconds)
        if landed[False] != landed[True] or len(landed[True]) != 2 * args.pages:
            raise SystemExit("the lakes differ: pages fetched ahead must land the same keys and bytes")
    finally:
        emulator.terminate()
        emulator.wait()
        shutil.rmtree(work, ignore_errors=True)

    one, many = statistics.median(times[False]), statistics.median(times[True])
    latency = args.latency_ms / 1000
    command = (
        f"`bench/parallel_pages.py --latency-ms {args.latency_ms:g} --pages {args.pages} --concurrency {args.concurrency} "
        f"--rounds {args.rounds}`, {dt.date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}."
    )
    setting = (
        f"Two endpoints of {args.pages} pages each (`offset`, `page_number`), {args.latency_ms:g} ms added to every "
        f"answer of the emulator, the source's `concurrency: {args.concurrency}` in both runs. Both landed the same "
        f"{len(landed[True])} keys with the same bytes (checked every round). Wall time of `apilake run`, start-up included."
    )
    chain = (
        f"| no total: page after page, to the empty page | {2 * (args.pages + 1)} | {one:.2f} s | {min(times[False]):.2f}–{max(times[False]):.2f} s | 1.0× |"
    )
    ahead = (
        f"| `total_path`, `total_pages_path`: fetched ahead | {2 * args.pages} | {many:.2f} s | "
        f"{min(times[True]):.2f}–{max(times[True]):.2f} s | {one / many:.1f}× |"
    )
    share = max(1, args.concurrency // 2)  # the source's slots, shared by both endpoints
    floors = (
        f"Page after page, an endpoint's {args.pages + 1} requests form a chain of at least "
        f"{(args.pages + 1) * latency:.1f} s of latency; fetched ahead, its first page, then the other {args.pages - 1} "
        f"in flight together within the source's `concurrency` (shared by both endpoints: about {share} each), at least "
        f"{(1 + -(-(args.pages - 1) // share)) * latency:.1f} s."
    )
    lines = [
        "# Pages fetched ahead vs one after another",
        "",
        command,
        "",
        setting,
        "",
        "| job file | requests | wall time (median) | min–max | speed-up |",
        "|---|---|---|---|---|",
        chain,
        ahead,
        "",
        floors,
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
