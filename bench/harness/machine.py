"""A description of the machine and software a benchmark ran on, for the report."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _first_line(argv: list[str]) -> str | None:
    if not shutil.which(argv[0]):
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return None


def _filesystem(path: Path) -> str | None:
    out = _first_line(["sh", "-c", f"df -T '{path}' | tail -n 1"])
    if not out:
        return None
    fields = out.split()
    return f"{fields[1]} on {fields[0]}" if len(fields) > 1 else out


def _git(*args: str) -> str | None:
    return _first_line(["git", "-C", str(REPO), *args])


def describe_machine(workdir: Path) -> dict[str, object]:
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"], capture_output=True, text=True).stdout.strip())
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "workdir_fs": _filesystem(workdir),
        "apilake_commit": f"{commit}{' + uncommitted changes in src/' if dirty else ''}" if commit else None,
        "rclone": _first_line(["rclone", "version"]),
        "curl": " ".join((_first_line(["curl", "--version"]) or "").split()[:2]) or None,
        "load_at_start": [round(x, 2) for x in os.getloadavg()],
    }
