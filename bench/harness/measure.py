"""Run one command as a child process and measure it exactly: wall time, CPU and peak RSS.

The command is started by `reaper.py`, a bare interpreter that `wait4`s it: the usage returned
covers the command and every descendant it waited for (so `xargs … rclone` counts all of its
rclone processes), and `ru_maxrss` is the peak resident set of the largest of them. See
reaper.py for why the harness does not fork the command itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REAPER = Path(__file__).with_name("reaper.py")


@dataclass(frozen=True)
class Measurement:
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_bytes: int
    exit_code: int
    output: str  # the end of stdout + stderr, for error messages
    server_cpu_s: dict[str, float]  # CPU the servers spent during the run, by server

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def run_measured(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path | None = None,
    timeout: float = 1800,
    servers: dict[str, Callable[[], float | None]] | None = None,
) -> Measurement:
    """Run `argv` to its end; `servers` name CPU-second probes of the processes it talks to."""
    probes = servers or {}
    with tempfile.TemporaryDirectory(prefix="bench-measure-") as tmp, open(Path(tmp, "output"), "w+b") as out:
        result = Path(tmp, "usage.json")
        before = {name: probe() for name, probe in probes.items()}
        reaper = [sys.executable, "-S", "-I", str(REAPER), str(result), str(timeout), "--", *argv]
        subprocess.run(reaper, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=True)
        after = {name: probe() for name, probe in probes.items()}
        usage = json.loads(result.read_text())
        out.seek(max(0, out.seek(0, os.SEEK_END) - 4000))
        tail = out.read().decode("utf-8", "replace")
    server_cpu = {
        name: round(after[name] - before[name], 3)  # type: ignore[operator]
        for name in probes
        if before[name] is not None and after[name] is not None
    }
    return Measurement(usage["wall_s"], usage["user_s"], usage["sys_s"], usage["peak_rss_bytes"], usage["exit_code"], tail, server_cpu)
