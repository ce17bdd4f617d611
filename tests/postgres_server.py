"""A real PostgreSQL server for tests (Debian's `postgresql` package), e.g. for pyiceberg's SQL catalog.

`PostgresServer` runs `initdb` into a fresh temporary folder and then `postgres` itself as a child
of the test process, on 127.0.0.1 and a free port, with its unix socket in that folder; `stop()`
shuts it down fast (SIGINT, what `pg_ctl stop -m fast` sends), reaps it and removes the folder.
PostgreSQL refuses to run as root, so as root (CI) both run as the unprivileged user `nobody`.

Use `with PostgresServer() as server:` directly, or the `postgres_uri` fixture (conftest.py
provides it): one server per test process (each pytest-xdist worker has its own, started by the
first test that asks), and a new, empty database for each test.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server_process import ServerContext

SUPERUSER = "apilake"
DRIVER = "postgresql+psycopg2"  # SQLAlchemy's dialect+driver, as pyiceberg's SQL catalog takes it
UNPRIVILEGED_USER = "nobody"
# A throwaway server: durability is of no use, start-up and commits should be quick.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "16MB",
}


def postgres_bindir() -> Path | None:
    """The folder with `initdb` and `postgres`: `pg_config --bindir`, else Debian's newest
    /usr/lib/postgresql/*/bin, else wherever `initdb` on PATH points. (Debian's libpq-dev has a
    `pg_config` naming the server's folder even without the server installed, so each is checked.)"""
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if result.returncode == 0:
            candidates.append(Path(result.stdout.strip()))
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda bindir: _version_key(bindir.parent.name), reverse=True)
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in ("initdb", "postgres", "createdb")):
            return bindir
    return None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer(ServerContext["PostgresServer"]):
    """A throwaway PostgreSQL cluster with a trusted superuser `apilake`, on loopback only."""

    def __init__(self, bindir: Path | None = None, *, startup_timeout: float = 30.0) -> None:
        found = bindir or postgres_bindir()
        if found is None:
            raise RuntimeError("PostgreSQL's server binaries (initdb, postgres) were not found: install Debian's `postgresql` package (`.ci/run` does)")
        self.bindir = found
        self.startup_timeout = startup_timeout
        self.folder: Path | None = None
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def start(self) -> PostgresServer:
        self.folder = Path(tempfile.mkdtemp(prefix="apilake-pg-"))
        try:
            self._initdb()
            last_error = ""
            for _attempt in range(3):  # the free port can be taken between probing and binding
                if self._start_postgres(_free_port()):
                    return self
                last_error = self._log_tail()
                self._stop_process()
            raise RuntimeError(f"PostgreSQL did not start:\n{last_error}")
        except BaseException:
            self.stop()
            raise

    def _initdb(self) -> None:
        assert self.folder is not None
        if os.geteuid() == 0:
            os.chown(self.folder, *self._unprivileged_ids())
        result = subprocess.run(
            [self.bindir / "initdb", "-D", self.folder / "data", "-U", SUPERUSER, "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync"],
            capture_output=True, text=True, cwd=self.folder, **self._run_as(),
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout}{result.stderr}")
        settings = {**SETTINGS, "unix_socket_directories": f"'{self.folder}'"}
        with open(self.folder / "data" / "postgresql.conf", "a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def _start_postgres(self, port: int) -> bool:
        assert self.folder is not None
        with open(self.folder / "server.log", "ab") as log:
            self._process = subprocess.Popen(
                [self.bindir / "postgres", "-D", self.folder / "data", "-p", str(port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, **self._run_as(),
            )  # fmt: skip
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            if self._ready():
                self.port = port
                return True
            time.sleep(0.05)
        return False

    def _ready(self) -> bool:
        """The postmaster's pid file says `ready` once it accepts connections (as `pg_ctl -w` checks)."""
        assert self.folder is not None
        try:
            lines = (self.folder / "data" / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its SQLAlchemy URI."""
        name = name or f"db{next(self._names)}"
        result = subprocess.run(
            [self.bindir / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name],
            capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"createdb {name} failed: {result.stderr}")
        return self.uri(name)

    def uri(self, database: str = "postgres") -> str:
        return f"{DRIVER}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        self._stop_process()
        folder, self.folder = self.folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def _stop_process(self) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, close connections), then immediate
        (SIGQUIT), then SIGKILL; always waited for, so no process is left behind."""
        process, self._process = self._process, None
        if process is None:
            return
        for stop_signal, timeout in ((signal.SIGINT, 20), (signal.SIGQUIT, 10), (signal.SIGKILL, None)):
            if process.poll() is not None:
                return
            process.send_signal(stop_signal)
            try:
                process.wait(timeout=timeout)
                return
            except subprocess.TimeoutExpired:
                continue

    def _log_tail(self) -> str:
        assert self.folder is not None
        return (self.folder / "server.log").read_text(errors="replace")[-2000:]

    @staticmethod
    def _unprivileged_ids() -> tuple[int, int]:
        user = pwd.getpwnam(UNPRIVILEGED_USER)
        return user.pw_uid, user.pw_gid

    def _run_as(self) -> dict[str, Any]:
        """Popen arguments that drop root (PostgreSQL's programs refuse to run as root)."""
        if os.geteuid() != 0:
            return {}
        uid, gid = self._unprivileged_ids()
        return {"user": uid, "group": gid, "extra_groups": [], "env": {**os.environ, "HOME": str(self.folder)}}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the test process (started by the first test that needs it,
    about a second), stopped at its end; tests keep apart through `postgres_uri`'s databases."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_uri(postgres_server: PostgresServer) -> str:
    """The SQLAlchemy URI of a new, empty database for this test, e.g. a pyiceberg SQL catalog's
    `uri` (`postgresql+psycopg2://apilake@127.0.0.1:PORT/dbN`, no password: trust on loopback)."""
    return postgres_server.create_database()
