"""The emulator's second vendor (Acme): token endpoint, auth schemes, reports, at the HTTP level."""

from __future__ import annotations

import httpx
import pytest

from apilake.emulator import Emulator, Fault


@pytest.fixture
def emu():
    with Emulator() as emulator:
        yield emulator


def token(emu: Emulator, **kwargs) -> httpx.Response:
    return httpx.post(emu.auth_url + "/oauth/token", **kwargs)


@pytest.mark.parametrize(
    "kwargs, status",
    [
        ({"data": {"grant_type": "client_credentials"}, "auth": ("acme-client", "acme-secret-a1b2c3d4")}, 200),
        ({"data": {"grant_type": "client_credentials", "client_id": "acme-client", "client_secret": "acme-secret-a1b2c3d4"}}, 200),
        ({"data": {"grant_type": "client_credentials"}, "auth": ("acme-client", "wrong")}, 401),
        ({"data": {"grant_type": "password"}, "auth": ("acme-client", "acme-secret-a1b2c3d4")}, 400),
    ],
)
def test_token_endpoint(emu: Emulator, kwargs: dict, status: int) -> None:
    response = token(emu, **kwargs)
    assert response.status_code == status
    if status == 200:
        assert response.json()["access_token"].startswith("acme-at-") and response.json()["expires_in"] == 3600


def test_tokens_expire_and_can_be_revoked_after_n_uses(emu: Emulator) -> None:
    emu.acme.config.token_uses = 1
    access = token(emu, data={"grant_type": "client_credentials"}, auth=("acme-client", "acme-secret-a1b2c3d4")).json()["access_token"]
    headers = {"Authorization": f"Bearer {access}"}
    assert httpx.get(emu.api_url + "/acme/accounts", headers=headers).status_code == 200
    assert httpx.get(emu.api_url + "/acme/accounts", headers=headers).status_code == 401


@pytest.mark.parametrize(
    "scheme, request_kwargs",
    [
        ("bearer", {"headers": {"Authorization": "Bearer demo-token"}}),
        ("api_key_header", {"headers": {"X-Api-Key": "acme-key-5e4d3c2b1a"}}),
        ("api_key_query", {"params": {"api_key": "acme-key-5e4d3c2b1a"}}),
        ("basic", {"auth": ("acme-user", "acme-pass-0f1e2d3c")}),
    ],
)
def test_one_scheme_at_a_time(emu: Emulator, scheme: str, request_kwargs: dict) -> None:
    emu.acme.config.auth = scheme
    assert httpx.get(emu.api_url + "/acme/accounts", **request_kwargs).status_code == 200
    emu.acme.config.auth = "oauth2"
    assert httpx.get(emu.api_url + "/acme/accounts", **request_kwargs).status_code == 401


def test_report_lifecycle_and_a_token_endpoint_fault(emu: Emulator) -> None:
    emu.acme.config.auth = "bearer"
    headers = {"Authorization": "Bearer demo-token"}
    created = httpx.post(emu.api_url + "/acme/reports", json={"type": "installs", "from": "2026-11-25", "to": "2026-11-25"}, headers=headers)
    assert created.status_code == 201 and created.json() == {"report_id": "rep-1"}
    statuses = [httpx.get(emu.api_url + "/acme/reports/rep-1", headers=headers).json()["status"] for _ in range(3)]
    assert statuses == ["pending", "pending", "done"]
    [url, _] = httpx.get(emu.api_url + "/acme/reports/rep-1", headers=headers).json()["result"]["urls"]
    assert url.startswith(emu.files_url) and httpx.get(url).status_code == 200
    assert httpx.get(emu.api_url + "/acme/reports/rep-9", headers=headers).status_code == 404
    emu.config.faults = [Fault(match="/oauth/token", kind="status", status=500, times=1, origin="auth")]
    form = {"data": {"grant_type": "client_credentials"}, "auth": ("acme-client", "acme-secret-a1b2c3d4")}
    assert [token(emu, **form).status_code for _ in range(2)] == [500, 200]


@pytest.mark.parametrize(
    "style, remaining, reset",
    [("x", "x-ratelimit-remaining", "x-ratelimit-reset"), ("ietf", "ratelimit-remaining", "ratelimit-reset")],
)
def test_the_limited_endpoint_tells_its_window_and_enforces_it(emu: Emulator, style: str, remaining: str, reset: str) -> None:
    emu.acme.config.auth = "bearer"
    emu.acme.feedback.config.style, emu.acme.feedback.config.limit, emu.acme.feedback.config.window_s = style, 3, 60
    headers = {"Authorization": f"Bearer {emu.config.token}"}
    answers = [httpx.get(emu.api_url + "/acme/limited/items", headers=headers) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers[remaining] for a in answers[:3]] == ["2", "1", "0"]
    assert int(answers[-1].headers["retry-after"]) > 0
    assert int(answers[0].headers[reset]) > (1_000_000_000 if style == "x" else 0)  # GitHub's Unix time, or seconds
    assert emu.acme.feedback.throttled == 1 and emu.stats.summary()["throttled"] == 1


def test_the_feedback_endpoint_reports_errors_inside_a_200(emu: Emulator) -> None:
    emu.acme.config.auth = "bearer"
    headers = {"Authorization": f"Bearer {emu.config.token}"}

    def get(account: str) -> httpx.Response:
        return httpx.get(f"{emu.api_url}/acme/feedback/{account}?date=2026-11-25", headers=headers)

    assert get("empty").status_code == 404
    assert get("suspended").json()["error"]["code"] == "account_suspended"
    assert [get("busy").json().get("status") for _ in range(3)] == ["processing", "processing", None]
    first = get("throttled")
    assert first.json()["error"]["code"] == "rate_limited" and first.headers["x-retry-in"] == "1"
    assert get("throttled").json()["account"] == "throttled"
