import email.utils

import pytest

from apilake.errors import TransferError
from apilake.fetch.client import is_transient, origin, parse_retry_after, wire_url


@pytest.mark.parametrize(
    "url, expected",
    [
        ("https://API.example.com/v1", ("https", "api.example.com", 443)),
        ("http://127.0.0.1:8080/x?y=1", ("http", "127.0.0.1", 8080)),
        ("http://h", ("http", "h", 80)),
    ],
)
def test_origin(url: str, expected: tuple) -> None:
    assert origin(url) == expected


def test_a_bad_port_is_a_transfer_error_not_a_crash() -> None:
    with pytest.raises(TransferError, match="bad port"):
        origin("https://h:99999/x?signature=abc")


@pytest.mark.parametrize(
    "status, transient", [(400, False), (401, False), (403, False), (404, False), (408, True), (428, True), (429, True), (500, True), (503, True), (507, True)]
)
def test_is_transient(status: int, transient: bool) -> None:
    assert is_transient(status) is transient


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        ("soon", None),
        (email.utils.formatdate(1_000_030, usegmt=True), 30.0),
        (email.utils.formatdate(999_000, usegmt=True), 0.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=1_000_000) == expected


# -- libcurl's side (`fetch.download`) ------------------------------------------------------------

from apilake.fetch.download import Environment, _curl_error, _phrase  # noqa: E402


@pytest.mark.parametrize(
    "environ, always, http_proxy",
    [
        ({}, (), ()),
        ({"SSL_CERT_FILE": "/ca.pem", "SSL_CERT_DIR": "/certs"}, (("CAINFO", "/ca.pem"), ("CAPATH", "/certs")), ()),
        ({"HTTP_PROXY": "http://p:3128"}, (), (("PROXY", "http://p:3128"),)),
        ({"HTTP_PROXY": "http://p:3128", "NO_PROXY": "127.0.0.1"}, (), (("PROXY", "http://p:3128"), ("NOPROXY", "127.0.0.1"))),
        ({"HTTP_PROXY": "http://p:3128", "http_proxy": "http://q:3128"}, (), ()),  # libcurl reads the lower-case one itself
        ({"HTTPS_PROXY": "http://p:3128"}, (), ()),  # libcurl reads it itself
    ],
)
def test_environment_settings_libcurl_does_not_read_itself(environ: dict, always: tuple, http_proxy: tuple) -> None:
    settings = Environment.of(environ)
    assert settings.always == always
    assert settings.for_url("http://api.example.com/x") == http_proxy
    assert settings.for_url("https://api.example.com/x") == ()


@pytest.mark.parametrize(
    "code, message, transient",
    [
        (35, "error:0A00010B:SSL routines::wrong version number", False),  # https to a plain server
        (35, "Recv failure: Connection reset by peer", True),  # a reset during the handshake, like any reset
        (60, "SSL certificate problem: unable to get local issuer certificate", False),
        (7, "Failed to connect", True),
    ],
)
def test_curl_errors_that_are_worth_another_try(code: int, message: str, transient: bool) -> None:
    assert _curl_error(code, message, None).transient is transient


def test_a_status_line_without_a_reason_phrase_gets_the_standard_one() -> None:
    assert _phrase(404) == "Not Found" and _phrase(599) == ""


@pytest.mark.parametrize(
    "url, sent",
    [
        ("https://h/v2/bulk/data?name=a%2Fb.csv.gz&signature=ab", "https://h/v2/bulk/data?name=a%2Fb.csv.gz&signature=ab"),
        ("https://h/x?name=a\nb\x1b[2J", "https://h/x?name=a%0Ab%1B[2J"),
        ("https://h/caf\u00e9/\u2028x", "https://h/caf%C3%A9/%E2%80%A8x"),
        ("https://h/a b", "https://h/a%20b"),
        ("https://h/p;q=1!*'()@~#frag", "https://h/p;q=1!*'()@~#frag"),
    ],
)
def test_a_url_goes_out_in_ascii_with_what_it_may_not_hold_encoded(url: str, sent: str) -> None:
    assert wire_url(url) == sent


def test_waiting_for_the_vendors_window_is_not_counted_against_timeouts_total() -> None:
    """`timeouts.total` bounds a request from its first send: the wait for the vendor's rate-limit
    window before it (2 s here, longer than the 1 s total) is not the request taking long."""
    import asyncio
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from apilake.fetch.client import SourceClient
    from apilake.fetch.json import get_json
    from apilake.fetch.limits import RequestBudget
    from apilake.jobfile import Source
    from apilake.redact import Redactor

    class SpentWindow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            for name, value in [("Content-Type", "application/json"), ("Content-Length", "2"), ("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", "2")]:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), SpentWindow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    source = Source.model_validate(
        {"name": "s", "base_url": base, "timeouts": {"total": 1}, "retry": {"attempts": 1}, "endpoints": [{"name": "e", "kind": "json", "path": "/x"}]}
    )

    async def two_pages() -> float:
        client = SourceClient(source, Redactor(), RequestBudget(source))
        try:
            await get_json(client, f"{base}/x", "s/e page 1")
            started = time.monotonic()
            await get_json(client, f"{base}/x?page=2", "s/e page 2")  # waits for the window, then is sent
            return time.monotonic() - started
        finally:
            await client.close()

    try:
        assert asyncio.run(two_pages()) >= 1.5
    finally:
        server.shutdown()
        server.server_close()
