"""What the test servers (moto, SeaweedFS, PostgreSQL) share: a context that starts and stops
them, and the end of a server process that must not outlive its test."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")


def end_process(process: subprocess.Popen[bytes], grace: float) -> None:
    """Ask `process` to stop, then kill it after `grace` seconds; reaped either way."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until_ready(process: subprocess.Popen[bytes], timeout: float, ready: Callable[[], bool], interval: float) -> bool:
    """Poll `ready()` (an `OSError` counts as not yet) until it holds, the process exits, or
    `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if ready():
                return True
        except OSError:
            pass
        time.sleep(interval)
    return False


class ServerContext(Generic[T]):
    """`with Server() as handle:` starts the server (handle: what `start` gives) and stops it."""

    def start(self) -> T:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> T:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
