"""A real S3 protocol server for tests: moto's standalone server on loopback, in its own process.

A separate process keeps the stored objects out of the test process (memory measurements stay
honest) and lets a test start a server with its own settings, e.g. one that checks credentials
(`MotoServer(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})`).

Use `with MotoServer() as endpoint_url:` directly, or the `moto_endpoint` fixture (conftest.py
provides it): one server per test process (each pytest-xdist worker has its own), emptied before
each test, and the AWS credential chain pointed at dummy values so a developer's real ~/.aws is
never read.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from server_process import ServerContext, end_process, wait_until_ready

DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Variables that would let a developer's own AWS setup leak into a test.
AWS_ENV_TO_CLEAR = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CA_BUNDLE",
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MotoServer(ServerContext[str]):
    """`python -m moto.server` on 127.0.0.1 and a free port; stopped (terminate, wait) on exit."""

    def __init__(self, env: dict[str, str] | None = None, *, startup_timeout: float = 20.0) -> None:
        self.env = env or {}
        self.startup_timeout = startup_timeout
        self.endpoint_url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    def start(self) -> str:
        last_error = ""
        for _attempt in range(3):  # the free port can be taken between probing and binding
            port = _free_port()
            env = {**os.environ, **DUMMY_AWS_ENV, **self.env}
            self._log = tempfile.NamedTemporaryFile(prefix="moto-server-", suffix=".log")  # noqa: SIM115 - closed in stop()
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
            if self._wait_until_listening(port):
                self.endpoint_url = f"http://127.0.0.1:{port}"
                return self.endpoint_url
            last_error = Path(self._log.name).read_text(errors="replace")[-2000:]
            self.stop()
        raise RuntimeError(f"moto server did not start:\n{last_error}")

    def _wait_until_listening(self, port: int) -> bool:
        assert self._process is not None

        def listening() -> bool:
            # A TCP connect, not an HTTP request: a request would count against
            # INITIAL_NO_AUTH_ACTION_COUNT on a server that checks credentials.
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True

        return wait_until_ready(self._process, self.startup_timeout, listening, interval=0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            end_process(process, grace=10)
        log, self._log = self._log, None
        if log is not None:
            log.close()


def use_dummy_aws_env(monkeypatch: pytest.MonkeyPatch, config_dir: Path) -> None:
    """Point the AWS credential chain at dummy keys only: no ~/.aws files, no instance metadata."""
    for name in AWS_ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    for name, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config_dir / "aws-config-absent"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(config_dir / "aws-credentials-absent"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy AWS credentials for the test, whatever the developer's own setup."""
    use_dummy_aws_env(monkeypatch, tmp_path)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """One moto server for the test process, stopped at its end: starting one costs about a
    second of CPU, and `moto_endpoint` empties it before each test."""
    with MotoServer() as endpoint_url:
        yield endpoint_url


@pytest.fixture
def moto_endpoint(aws_env: None, moto_server: str) -> str:
    """The endpoint URL of the module's moto S3 server, emptied for the test (moto's reset API),
    so every test starts from a store without buckets, as from a fresh server."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"), timeout=30).close()
    return moto_server


def s3(endpoint: str):
    """A boto3 S3 client of the test's moto server, with the dummy credentials whatever the
    test's environment (a credentials test empties it)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=DUMMY_AWS_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=DUMMY_AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    """The moto endpoint, with an empty bucket `lake` on it."""
    s3(moto_endpoint).create_bucket(Bucket="lake")
    return moto_endpoint


@pytest.fixture
def glue_catalog_properties(moto_endpoint: str) -> dict[str, str]:
    """pyiceberg catalog properties for an AWS Glue catalog on the test's moto server (which
    serves Glue beside S3), its warehouse in an empty bucket `warehouse` there. The `client.*`
    credentials and region serve both the Glue client and the S3 file IO."""
    s3(moto_endpoint).create_bucket(Bucket="warehouse")
    return {
        "type": "glue",
        "glue.endpoint": moto_endpoint,
        "s3.endpoint": moto_endpoint,
        "client.region": DUMMY_AWS_ENV["AWS_DEFAULT_REGION"],
        "client.access-key-id": DUMMY_AWS_ENV["AWS_ACCESS_KEY_ID"],
        "client.secret-access-key": DUMMY_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        "warehouse": "s3://warehouse/",
    }
