"""The signed housekeeping requests (`destinations/s3_requests.py`) against hostile or broken
stores on loopback: every bad answer is a `RequestFailed` naming what was wrong, never a traceback,
and nothing is read past the cap. Against real stores (moto and SeaweedFS) they are exercised by
the kill -9 tests of test_e2e_s3.py, which need them to find and abort a killed run's upload."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from apilake.destinations.s3_credentials import Keys
from apilake.destinations.s3_requests import MAX_ANSWER, RequestFailed, Requests, S3Answer, Upload
from server_process import ServerContext, ThreadedServer

LISTING = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>lake</Bucket><IsTruncated>false</IsTruncated>
  <Upload><Key>raw/a b&amp;c.csv.gz</Key><UploadId>u1</UploadId><Initiated>2026-12-01T10:00:00.000Z</Initiated></Upload>
</ListMultipartUploadsResult>"""


class Store(ServerContext[str]):
    """A loopback 'store' that answers every request with one status and body, and keeps the requests."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self._server: ThreadedServer | None = None

    def start(self) -> str:
        store = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                store.seen.append((self.command, self.path, dict(self.headers)))
                self.send_response(store.status)
                self.send_header("Content-Length", str(len(store.body)))
                for name, value in store.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(store.body)

            do_DELETE = do_HEAD = do_GET

        self._server = ThreadedServer(Handler)
        return self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()


def requests(endpoint: str) -> Requests:
    return Requests(endpoint, "lake", False, "eu-west-1", lambda: Keys("AKIDTEST", "secret-key", "session-token"))


def test_a_listing_is_read_and_the_requests_are_signed_for_the_bucket() -> None:
    store = Store(200, LISTING)
    with store as endpoint:
        found = list(requests(endpoint).uploads("raw/"))
    assert found == [Upload("raw/a b&c.csv.gz", "u1", dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC))]
    [(method, path, _headers)] = store.seen
    assert (method, path) == ("GET", "/lake/?prefix=raw%2F&uploads=")


@pytest.fixture
def signed() -> Iterator[Store]:
    store = Store(204, b"")
    with store as endpoint:
        requests(endpoint).abort(Upload("raw/a b&c.csv.gz", "u/1+2", dt.datetime.now(dt.UTC)))
        yield store


def test_an_abort_names_the_key_and_upload_and_signs_with_the_session(signed: Store) -> None:
    [(method, path, headers)] = signed.seen
    assert method == "DELETE"
    assert path == "/lake/raw/a%20b%26c.csv.gz?uploadId=u%2F1%2B2"
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
    assert "/eu-west-1/s3/aws4_request" in headers["Authorization"]
    assert headers["X-Amz-Security-Token"] == "session-token"
    assert "secret-key" not in repr(headers)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (403, b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>", "AccessDenied no"),
        (500, b"upstream broke", "500"),  # not XML: the status stands for the code
        (200, b"<html>a captive portal</html", "not S3 XML"),
        (200, b"<" + b"x" * (MAX_ANSWER + 10), "over 16 MiB"),
    ],
)
def test_broken_answers_are_named(status: int, body: bytes, expected: str) -> None:
    with Store(status, body) as endpoint, pytest.raises(RequestFailed, match=expected) as caught:
        list(requests(endpoint).uploads("raw/"))
    if status >= 300:
        assert isinstance(caught.value, S3Answer) and caught.value.status == status


def test_an_endpoint_nobody_listens_on_is_a_request_failure() -> None:
    with Store(200, b"") as endpoint:
        pass  # closed again: the port is free
    with pytest.raises(RequestFailed, match="cannot reach the S3 endpoint"):
        list(requests(endpoint).uploads("raw/"))


def test_credentials_that_cannot_be_had_are_a_request_failure() -> None:
    def broken() -> Keys:
        raise RuntimeError("the metadata endpoint is down")

    with Store(200, LISTING) as endpoint, pytest.raises(RequestFailed, match=r"no usable AWS credentials \(RuntimeError\)"):
        list(Requests(endpoint, "lake", False, "us-east-1", broken).uploads(""))


def test_a_listing_that_says_it_goes_on_without_saying_where_is_refused_not_looped() -> None:
    endless = LISTING.replace(b"<IsTruncated>false</IsTruncated>", b"<IsTruncated>true</IsTruncated>")
    with Store(200, endless) as endpoint, pytest.raises(RequestFailed, match="no new place to go on from"):
        list(requests(endpoint).uploads("raw/"))


def test_an_upload_begun_at_a_time_without_a_zone_is_taken_as_utc() -> None:
    naive = LISTING.replace(b"2026-12-01T10:00:00.000Z", b"2026-12-01T10:00:00")
    with Store(200, naive) as endpoint:
        [upload] = list(requests(endpoint).uploads("raw/"))
    assert upload.initiated == dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)


def test_the_requests_go_through_the_proxy_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    from altering_proxy import AlteringProxy

    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    store = Store(200, LISTING)
    with store as endpoint:
        proxy = AlteringProxy(endpoint, match=None)
        with proxy as proxy_url:
            monkeypatch.setenv("HTTP_PROXY", proxy_url)
            [upload] = list(requests(endpoint).uploads("raw/"))
            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
            list(requests(endpoint).uploads("raw/"))  # exempt: straight to the store
    assert upload.upload_id == "u1"
    assert [seen.target for seen in proxy.seen] == [f"{endpoint}/lake/?prefix=raw%2F&uploads="]
    assert len(store.seen) == 2


@pytest.mark.parametrize(
    ("answer", "region"), [({"x-amz-bucket-region": "eu-west-3"}, "eu-west-3"), ({}, None), ({"x-amz-bucket-region": "eu west\r\n"}, None)]
)
def test_a_destination_without_a_region_asks_s3_where_its_bucket_lives(
    answer: dict[str, str], region: str | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # boto3 followed S3's redirect to the bucket's region; obstore does not, so apilake asks once.
    from apilake.destinations import s3_requests
    from apilake.destinations.s3 import S3Destination
    from apilake.jobfile import S3Options

    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    store = Store(403, b"", answer)  # S3 names the region even when it refuses
    with store as endpoint:
        monkeypatch.setattr(s3_requests, "AWS_GLOBAL", endpoint)
        found = S3Destination("s3://far-bucket/raw", S3Options()).settings()
        configured = S3Destination("s3://far-bucket/raw", S3Options(region="ap-south-1")).settings()
    assert found.region == (region or "us-east-1")
    assert [(method, path) for method, path, _ in store.seen] == [("HEAD", "/far-bucket")]  # unsigned, and once
    assert configured.region == "ap-south-1"  # a region the user named is not second-guessed
