"""Start one command, wait for it, and write its exact resource usage as JSON.

Run as `python -S -I reaper.py RESULT.json TIMEOUT_S -- CMD ARGS...` by `measure.run_measured`.

Why a separate, tiny process: on Linux a process's peak RSS (`ru_maxrss`) starts at the RSS of
the process that forked it, because exec records the old memory map's high-water mark. Forked
from the harness (70 MB of Python and boto3) every contender would seem to use at least 70 MB;
forked from this bare interpreter (about 8.5 MB, no site, no imports beyond the built-ins) the
floor is below any contender's real peak. Wall time is taken here too, around spawn and wait, so
the interpreter's own start-up is not counted.
"""

import json
import os
import signal
import sys
import time


def main() -> None:
    result_path, timeout, sep, *argv = sys.argv[1:]
    assert sep == "--" and argv, "usage: reaper.py RESULT.json TIMEOUT_S -- CMD ARGS..."
    started = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, os.environ)
    signal.signal(signal.SIGALRM, lambda *_: os.kill(pid, signal.SIGKILL))
    signal.alarm(max(1, int(float(timeout))))
    _pid, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    signal.alarm(0)
    doc = {
        "wall_s": wall,
        "user_s": usage.ru_utime,
        "sys_s": usage.ru_stime,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "exit_code": os.waitstatus_to_exitcode(status),
    }
    with open(result_path, "w") as f:
        json.dump(doc, f)


if __name__ == "__main__":
    main()
