"""What the test servers (moto, SeaweedFS, PostgreSQL) share: a context that starts and stops
them, and the end of a server process that must not outlive its test."""

from __future__ import annotations

import subprocess
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
