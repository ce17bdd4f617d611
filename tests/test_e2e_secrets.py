"""Secrets against hostile servers, through the `apilake` command: echoed where an error message
cuts its text, echoed encoded, written into keys, carried by a redirect to another origin; and
what masking must leave alone (a word that holds a short password, a URL). Redirect limits too.

Each test runs a small server on loopback that answers as a careless or hostile vendor would.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from apilake.redact import ERROR_DETAIL_CHARS
from conftest import TOKEN, all_text, records, run_cli

DATE = "2026-11-25"
RETRY = {"attempts": 1}
Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Hostile:
    """A server whose `answer(method, path, body)` says (status, headers, body); it keeps every request."""

    answer: Callable[[str, str, bytes], Answer]
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@contextmanager
def serving(answer: Callable[[str, str, bytes], Answer]) -> Iterator[Hostile]:
    hostile = Hostile(answer)

    class Handler(BaseHTTPRequestHandler):
        def handle_one(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hostile.seen.append((self.command, self.path, dict(self.headers), body))
            status, headers, payload = hostile.answer(self.command, self.path, body)
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers, "Content-Length": str(len(payload))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = handle_one

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hostile.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hostile
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def job_file(tmp_path: Path, base_url: str, endpoints: list[dict[str, Any]], **source: Any) -> Path:
    settings = {"name": "vendor", "base_url": base_url, "token": "${DATAAI_TOKEN}", "retry": RETRY, **source}
    job = {"destination": str(tmp_path / "lake"), "sources": [{**settings, "endpoints": endpoints}]}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def run(job: Path, **env: str) -> Any:
    return run_cli("run", str(job), "--date", DATE, env=env)


def json_endpoint(name: str, path: str, **settings: Any) -> dict[str, Any]:
    return {"name": name, "kind": "json", "path": path, **settings}


def assert_nowhere(lake: Path, result: Any, *texts: str) -> None:
    everything = all_text(lake, result)
    for text in texts:
        assert text not in everything, f"{text!r} leaked"


# -- 1. redact, then cut --------------------------------------------------------------------------

SHOWN = 8  # how much of a secret a cut before redaction would show


def straddling(secret: str, prefix: str = "", limit: int = ERROR_DETAIL_CHARS) -> str:
    """Filler that puts `secret` across the cut at `limit`: SHOWN characters of it before the cut."""
    return "x" * (limit - len(prefix) - SHOWN)


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda: (500, {}, (straddling(TOKEN) + TOKEN).encode()), id="5xx-body"),
        pytest.param(lambda: (200, {}, json.dumps({"code": 403, "error": straddling(TOKEN) + TOKEN}).encode()), id="200-with-code-403"),
        pytest.param(lambda: (200, {"Content-Type": "text/html"}, ("y" * (60 - SHOWN - 1) + TOKEN).encode()), id="body-not-json"),
        pytest.param(lambda: (500, {}, (" " * (2048 - SHOWN) + TOKEN).encode()), id="2KiB-error-body-edge"),
    ],
)
def test_a_secret_across_the_cut_of_an_error_message_is_masked_whole(tmp_path: Path, answer: Callable[[], Answer]) -> None:
    with serving(lambda method, path, body: answer()) as server:
        result = run(job_file(tmp_path, server.url, [json_endpoint("echo", "/echo")]))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "***" in result.stdout  # the message shows where the secret was
    assert_nowhere(tmp_path / "lake", result, TOKEN[:SHOWN], TOKEN[: SHOWN - 1])


CLIENT_SECRET = "client-secret-7h6g5f4e3d"


def oauth2(token_url: str) -> dict[str, Any]:
    return {"type": "oauth2_client_credentials", "token_url": token_url, "client_id": "me", "client_secret": "${CLIENT_SECRET}"}


def test_a_token_endpoint_echoing_the_client_secret_across_the_cut_is_masked(tmp_path: Path) -> None:
    detail = json.dumps({"detail": straddling(CLIENT_SECRET, prefix='{"detail": "') + CLIENT_SECRET}).encode()
    with serving(lambda method, path, body: (401, {}, detail)) as server:
        job = job_file(tmp_path, server.url, [json_endpoint("echo", "/echo")], token=None, auth=oauth2(server.url + "/token"))
        result = run(job, CLIENT_SECRET=CLIENT_SECRET)
    assert result.returncode == 1
    assert "answered HTTP 401" in result.stdout and "***" in result.stdout
    assert_nowhere(tmp_path / "lake", result, CLIENT_SECRET[:SHOWN])


def test_a_fetched_access_token_echoed_across_the_cut_is_masked(tmp_path: Path) -> None:
    access = "at-0123456789abcdef"

    def answer(method: str, path: str, body: bytes) -> Answer:
        if path == "/token":
            return 200, {}, json.dumps({"access_token": access, "expires_in": 3600}).encode()
        return 500, {}, (straddling(access) + access).encode()

    with serving(answer) as server:
        job = job_file(tmp_path, server.url, [json_endpoint("echo", "/echo")], token=None, auth=oauth2(server.url + "/token"))
        result = run(job, CLIENT_SECRET=CLIENT_SECRET)
    assert result.returncode == 1 and "HTTP 500" in result.stdout
    assert any(headers.get("Authorization") == f"Bearer {access}" for _, _, headers, _ in server.seen)
    assert_nowhere(tmp_path / "lake", result, access[:SHOWN])


# -- 2. a secret in a key or a matrix value -------------------------------------------------------


@pytest.mark.parametrize(
    "settings, where",
    [
        pytest.param({"key": "{source}/${DATAAI_TOKEN}/{date}.json"}, "sources[0].endpoints[0].key", id="key"),
        pytest.param({"matrix": {"acct": ["${DATAAI_TOKEN}"]}}, "sources[0].endpoints[0].matrix.acct[0]", id="matrix"),
        pytest.param({"matrix": {"acct": ["one", "${ACCT_TOKEN}"]}}, "sources[0].endpoints[0].matrix.acct[1]", id="secret-named-matrix"),
    ],
)
def test_a_secret_in_a_key_or_a_matrix_value_is_refused_naming_the_key(tmp_path: Path, settings: dict[str, Any], where: str) -> None:
    job = job_file(tmp_path, "http://127.0.0.1:9", [json_endpoint("echo", "/echo/{acct}" if "matrix" in settings else "/echo", **settings)])
    env = {"ACCT_TOKEN": "acct-tok-31415926"}
    for args in (["validate", str(job)], ["run", str(job), "--date", DATE], ["run", str(job), "--date", DATE, "--dry-run"]):
        result = run_cli(*args, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"{where}: holds a secret" in result.stderr
        assert "Traceback" not in result.stderr
        assert_nowhere(tmp_path / "lake", result, TOKEN, "acct-tok-31415926")


# -- 3. echoed in an encoded form -----------------------------------------------------------------

SLASHED = "tok/9f8e+7d6c=5b4a~x"  # characters that JSON and percent-encoding each write their own way


def encoded_echoes(secret: str) -> dict[str, str]:
    raw = secret.encode()
    return {
        "json-slash": json.dumps(secret).replace("/", "\\/")[1:-1],
        "json-u-escapes": "".join(c if c.isalnum() or c in "-._~" else f"\\u{ord(c):04x}" for c in secret),  # no encoder escapes these
        "go-html-escapes": json.dumps(secret)[1:-1].replace("+", "\\u002b").replace("=", "\\u003d"),
        "percent-upper": quote(secret, safe=""),
        "percent-lower": quote(secret, safe="").lower(),
        "base64": base64.b64encode(raw).decode(),
        "base64-urlsafe-unpadded": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        **{f"inside-base64-{shift}": base64.b64encode(b"\xfb" * shift + raw + b"tail").decode() for shift in (1, 2, 3)},
    }


def test_a_secret_echoed_encoded_is_masked_in_every_form(tmp_path: Path) -> None:
    echoes = encoded_echoes(SLASHED)
    names = list(echoes)

    def answer(method: str, path: str, body: bytes) -> Answer:
        return 400, {}, f'{{"error": "bad credential {echoes[names[int(path.rsplit("/", 1)[1])]]}"}}'.encode()

    with serving(answer) as server:
        job = job_file(tmp_path, server.url, [json_endpoint("echo", "/echo/{n}", matrix={"n": list(range(len(names)))})])
        result = run(job, DATAAI_TOKEN=SLASHED)
    assert result.returncode == 1
    assert result.stdout.count("HTTP 400") == len(names)  # every echo reached a message
    everything = all_text(tmp_path / "lake", result)
    for name, echo in echoes.items():
        assert echo not in everything, f"{name}: {echo!r} leaked"
        if name.startswith("inside-"):  # no 8 characters of it survive (the ends mix in a neighbour's bits)
            assert not [echo[i : i + 8] for i in range(6, len(echo) - 14) if echo[i : i + 8] in everything], name


# -- 4. a 307/308 to another origin with a body ---------------------------------------------------


@pytest.mark.parametrize("status", [307, 308])
def test_a_redirect_that_would_resend_a_post_body_to_another_origin_is_refused(tmp_path: Path, status: int) -> None:
    with (
        serving(lambda method, path, body: (200, {}, b'{"ok": true}')) as elsewhere,
        serving(lambda method, path, body: (status, {"Location": elsewhere.url + "/collect"}, b"")) as api,
    ):
        endpoint = json_endpoint("search", "/search", method="POST", body={"query": "{date}", "token": "${DATAAI_TOKEN}"})
        result = run(job_file(tmp_path, api.url, [endpoint]))
    assert result.returncode == 1
    assert f"a {status} redirect from {api.url}/search to another origin ({elsewhere.url}/collect) would re-send the POST body" in result.stdout
    assert api.seen and TOKEN in api.seen[0][3].decode()  # the source itself got the body
    assert elsewhere.seen == []
    assert_nowhere(tmp_path / "lake", result, TOKEN)


def test_a_redirect_within_the_origin_keeps_the_post_body(tmp_path: Path) -> None:
    def answer(method: str, path: str, body: bytes) -> Answer:
        return (307, {"Location": "/v2/search"}, b"") if path == "/search" else (200, {}, body)

    with serving(answer) as api:
        endpoint = json_endpoint("search", "/search", method="POST", body={"query": "{date}"})
        result = run(job_file(tmp_path, api.url, [endpoint]))
    assert result.returncode == 0, result.stdout
    assert [(m, p, json.loads(b)) for m, p, _, b in api.seen] == [("POST", "/search", {"query": DATE}), ("POST", "/v2/search", {"query": DATE})]


# -- 5. what masking leaves alone -----------------------------------------------------------------


def test_a_short_password_is_masked_as_a_word_not_inside_words(tmp_path: Path) -> None:
    with serving(lambda method, path, body: (401, {}, b'{"error": "password wrong for user me"}')) as server:
        auth = {"type": "basic", "username": "me", "password": "${PASS}"}
        job = job_file(tmp_path, server.url, [json_endpoint("basic_wrong", "/basic_wrong")], token=None, auth=auth)
        result = run(job, PASS="wrong")
    assert result.returncode == 1
    assert "password *** for user me" in result.stdout  # the password, where it stands as a word
    assert records(tmp_path / "lake")[-1]["units"][0]["url"] == f"{server.url}/basic_wrong"
    assert "vendor/basic_wrong" in result.stdout and "basic_***" not in all_text(tmp_path / "lake", result)


def test_a_variable_named_like_a_credential_is_not_masked_where_it_is_a_url(tmp_path: Path) -> None:
    with serving(lambda method, path, body: (400, {}, b'{"error": "invalid_client"}')) as server:
        token_url = server.url + "/oauth/token"
        job = job_file(tmp_path, server.url, [json_endpoint("echo", "/echo")], token=None, auth=oauth2("${AUTH_TOKEN_URL}"))
        result = run(job, AUTH_TOKEN_URL=token_url, CLIENT_SECRET=CLIENT_SECRET)
    assert result.returncode == 1
    assert f"token endpoint {token_url} answered HTTP 400" in result.stdout


# -- 17. the redirect limit -----------------------------------------------------------------------


def chain(method: str, path: str, body: bytes) -> Answer:
    """`/redirect/N`: N 302s, then a JSON body (the httpbin route)."""
    left = int(path.rsplit("/", 1)[1])
    return (302, {"Location": f"/redirect/{left - 1}"}, b"") if left else (200, {}, b'{"arrived": true}')


@pytest.mark.parametrize("limit", [None, 2])
def test_the_redirect_limit_is_exact_and_names_the_first_url(tmp_path: Path, limit: int | None) -> None:
    allowed = 5 if limit is None else limit
    with serving(chain) as server:
        endpoints = [json_endpoint("ok", f"/redirect/{allowed}"), json_endpoint("too_many", f"/redirect/{allowed + 1}")]
        settings = {} if limit is None else {"max_redirects": limit}
        result = run(job_file(tmp_path, server.url, endpoints, **settings))
    assert result.returncode == 1
    units = {u["endpoint"]: u for u in records(tmp_path / "lake")[-1]["units"]}
    assert units["ok"]["status"] == "landed"
    assert units["too_many"]["status"] == "failed"
    assert units["too_many"]["error"] == f"more than {allowed} redirects (max_redirects) starting at {server.url}/redirect/{allowed + 1}"


# -- a table catalog's credentials ------------------------------------------------------------------


def test_a_table_catalogs_credential_echoed_by_the_catalog_is_masked(tmp_path: Path) -> None:
    """A REST catalog that quotes the credential it was sent in its error: the message apilake
    prints names the catalog, never the credential, in no output, log or record."""
    secret = "catalog-tok-5e6f7a8b"

    def answer(method: str, path: str, body: bytes) -> Answer:
        if path.startswith("/catalog/"):
            error = {"error": {"message": f"token {secret} is not valid here", "type": "NotAuthorizedException", "code": 401}}
            return 401, {}, json.dumps(error).encode()
        return 200, {}, b'[{"id": 1}]'

    with serving(answer) as hostile:
        job = job_file(tmp_path, hostile.url, [json_endpoint("items", "/items")])
        doc = yaml.safe_load(job.read_text())
        doc["tables"] = {"catalog": {"type": "rest", "uri": f"{hostile.url}/catalog", "token": "${CATALOG_TOKEN}"}}
        job.write_text(yaml.safe_dump(doc, sort_keys=False))
        result = run_cli("run", str(job), "--date", DATE, env={"CATALOG_TOKEN": secret})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "tables not refreshed" in result.stderr and "token *** is not valid" in result.stderr
    assert_nowhere(tmp_path / "lake", result, secret)
