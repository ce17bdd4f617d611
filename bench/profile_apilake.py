"""Profile `apilake run` on one benchmark scenario with py-spy, and print where its CPU goes.

    .venv/bin/python bench/profile_apilake.py bulk-large-local [--quick] [--native] [--svg out.svg]

Starts the scenario's emulator (and moto for S3), writes the same job file the harness uses,
runs `py-spy record --format raw` around `apilake run`, then folds the samples into self time per
function and inclusive time for the per-byte suspects (sha256, inflate, HTTP reads, writes).
Needs the bench extra (`pip install -e '.[bench]'`); py-spy may need root or ptrace permission.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.contenders import PATCHES, VENV_BIN, Setup, job_document
from harness.scenarios import DATE, TOKEN, BulkScenario, JsonScenario, default_scenarios
from harness.servers import EmulatorProcess, MotoProcess, bench_env, s3_client

#: (label, substring of a frame) whose inclusive share of samples is worth knowing
SUSPECTS = (
    ("sha256 (StreamCheck.hash → hashlib)", "hash (apilake/integrity.py"),
    ("gzip check (StreamCheck.inflate)", "inflate (apilake/integrity.py"),
    ("reading the HTTP body (httpx/httpcore/h11)", "aiter_raw (httpx"),
    ("writing the object (destination writer)", "write (apilake/destinations/"),
    ("fsync", "fsync"),
    ("importing modules at start-up", "_find_and_load"),
    ("event loop idle (select/epoll)", "select (selectors.py"),
)


def where(frame: str) -> str:
    """The shared library (native frames) or the Python package a frame belongs to."""
    inside = frame[frame.rfind("(") + 1 : frame.rfind(")")] if "(" in frame else frame
    if ".so" in inside:
        return inside.split("/")[-1].split(".cpython")[0].split(".so")[0]
    return "python: " + inside.split("/")[0].split(".py")[0]


def fold(raw: Path) -> tuple[int, collections.Counter[str], collections.Counter[str], collections.Counter[str], collections.Counter[str]]:
    """Total samples; self samples per leaf frame; inclusive samples per suspect; self samples per
    library; native self samples per the Python line that called into C."""
    total = 0
    caller: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    library: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        leaf[frames[-1]] += n
        library[where(frames[-1])] += n
        if ".py:" not in frames[-1]:
            caller[next((f for f in reversed(frames) if ".py:" in f), "(no Python frame)")] += n
        for label, needle in SUSPECTS:
            if any(needle in f for f in frames):
                inclusive[label] += n
    return total, leaf, inclusive, library, caller


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario")
    p.add_argument("--quick", action="store_true", help="the --quick sizes")
    p.add_argument("--native", action="store_true", help="include C frames (py-spy --native)")
    p.add_argument("--rate", type=int, default=250, help="samples per second")
    p.add_argument("--idle", action="store_true", help="also sample threads that wait (wall time, not CPU)")
    p.add_argument("--concurrency", type=int, help="the source's `concurrency` in the job file")
    p.add_argument("--patch", help="load the experiment bench/patches/PATCH (see run.py --patch)")
    p.add_argument("--svg", type=Path, help="also write a flame graph here")
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args()
    scenario = next((s for s in default_scenarios(quick=a.quick) if s.name == a.scenario), None)
    if not isinstance(scenario, BulkScenario | JsonScenario):
        raise SystemExit(f"no bulk or JSON scenario named {a.scenario!r}")
    py_spy = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
    work = Path(tempfile.mkdtemp(prefix="apilake-profile-"))
    moto = MotoProcess() if scenario.dest == "s3" else None
    try:
        if moto is not None:
            s3_client(moto.endpoint_url).create_bucket(Bucket="bench")
        with EmulatorProcess(scenario.emulator_config()) as emulator:
            dest = "s3://bench/profile" if moto else str(work / "lake")
            setup = Setup(emulator, work, moto.endpoint_url if moto else None)
            job = work / "job.yaml"
            job.write_text(yaml.safe_dump(job_document(scenario, setup, dest, a.concurrency), sort_keys=False))
            apilake = [str(VENV_BIN / "apilake"), "run", str(job), "--date", DATE]
            env = bench_env({"DATAAI_TOKEN": TOKEN} | ({"PYTHONPATH": str(PATCHES / a.patch)} if a.patch else {}))
            raw = work / "profile.txt"
            spy = [py_spy, "record", "--rate", str(a.rate), "--format", "raw", "-o", str(raw)]
            spy += ["--native"] if a.native else []
            spy += ["--idle"] if a.idle else []
            subprocess.run([*spy, "--", *apilake], check=True, env=env, stdout=subprocess.DEVNULL)
            if a.svg:
                subprocess.run([py_spy, "record", "--rate", str(a.rate), "-o", str(a.svg), "--", *apilake[:-2], "--date", DATE, "--force"],
                               check=True, env=env, stdout=subprocess.DEVNULL)  # fmt: skip
        total, leaf, inclusive, library, caller = fold(raw)
        print(f"{scenario.name}: {total} samples at {a.rate}/s ({'all threads, waiting included' if a.idle else 'CPU only'})\n\ninclusive:")
        for label, _ in SUSPECTS:
            print(f"  {inclusive[label] / total:6.1%}  {label}")
        print("\nself time by library or package:")
        for name, n in library.most_common(12):
            print(f"  {n / total:6.1%}  {name}")
        if caller:
            print("\nnative (C) time by the Python line that called it:")
            for line, n in caller.most_common(10):
                print(f"  {n / total:6.1%}  {line}")
        print("\nself time, top frames:")
        for frame, n in leaf.most_common(a.top):
            print(f"  {n / total:6.1%}  {frame}")
    finally:
        if moto is not None:
            moto.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
