"""End to end: OAuth2 refresh tokens that the vendor rotates and honours once (the emulator's Acme
token endpoint), kept by apilake in the token store across runs, concurrent runs and hosts."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import yaml

from apilake.emulator import Emulator
from conftest import all_text, lake_objects, records, run_cli, start_cli, wait_for
from moto_server import s3

ACCOUNTS = {"name": "accounts", "kind": "json", "path": "/accounts", "params": {"date": "{date}"}}
SECRET = "acme-secret-a1b2c3d4"
DATES = ["2026-11-23", "2026-11-24", "2026-11-25", "2026-11-26"]


def refresh_auth(emu: Emulator) -> dict[str, Any]:
    return {
        "type": "oauth2_refresh_token",
        "token_url": emu.auth_url + "/oauth/token",
        "client_id": "acme-client",
        "client_secret": "${ACME_SECRET}",
        "refresh_token": "${ACME_REFRESH_TOKEN}",
    }


def job_file(
    path: Path, emu: Emulator, destination: str, endpoints: list[dict[str, Any]] | None = None, source: dict[str, Any] | None = None, **top: Any
) -> Path:
    source = {
        "name": "acme",
        "base_url": emu.api_url + "/acme",
        "auth": refresh_auth(emu),
        "retry": {"attempts": 2, "backoff_initial": 0.05, "backoff_max": 0.1, "budget_seconds": 10},
        "endpoints": endpoints or [ACCOUNTS],
        **(source or {}),
    }
    path.write_text(yaml.safe_dump({"timezone": "UTC", "destination": destination, **top, "sources": [source]}, sort_keys=False))
    return path


def env(refresh_token: str) -> dict[str, str]:
    return {"ACME_SECRET": SECRET, "ACME_REFRESH_TOKEN": refresh_token}


def run(job: Path, date: str, refresh_token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("run", str(job), "--date", date, *args, env=env(refresh_token))


def secrets_of(emu: Emulator) -> list[str]:
    """Every token the vendor handed out, and the client secret."""
    return [SECRET, *emu.acme.refresh_tokens.issued, *emu.acme.refresh_tokens.access_tokens]


def assert_no_token(emu: Emulator, lake: Path, *texts: str) -> None:
    """No token in any output, nor in any byte of any file under the lake (its token store too)."""
    assert emu.acme.refresh_tokens.issued and emu.acme.refresh_tokens.access_tokens
    everything = "\n".join(texts) + "\n".join(p.read_bytes().decode("latin-1") for p in lake.rglob("*") if p.is_file())
    everything += "\n".join(p.as_posix() for p in lake.rglob("*"))
    for secret in secrets_of(emu):
        assert secret not in everything


def stored_tokens(lake: Path) -> list[Path]:
    return sorted((lake / "_apilake" / "tokens").glob("*.json"))


def test_rotated_refresh_tokens_carry_from_run_to_run(tmp_path: Path, emulator: Emulator) -> None:
    lake = tmp_path / "lake"
    job = job_file(tmp_path / "job.yaml", emulator, str(lake))
    vendor = emulator.acme.refresh_tokens
    first = vendor.grant()  # the job file keeps this one; each run spends the one the run before stored
    outputs = []
    for n, date in enumerate(DATES[:3], start=1):
        emulator.acme.expire_access_tokens()  # an hour later: the stored access token no longer works
        result = run(job, date, first)
        assert result.returncode == 0, result.stdout + result.stderr
        assert vendor.refreshes == n and vendor.refused == 0
        outputs += [result.stdout, result.stderr, all_text(lake, result)]
    assert sorted(lake_objects(lake)) == [f"acme/accounts/dt={d}/data.json" for d in DATES[:3]]

    # A run while the stored access token is still good spends no refresh token at all.
    result = run(job, DATES[3], first)
    assert result.returncode == 0 and vendor.refreshes == 3
    status = run_cli("status", str(job), env=env(first))
    assert "_apilake/tokens" not in status.stdout and "Traceback" not in status.stderr
    [kept] = stored_tokens(lake)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert_no_token(emulator, lake, *outputs, result.stdout, result.stderr, status.stdout, status.stderr)


def test_two_runs_at_once_spend_one_refresh_token(tmp_path: Path, emulator: Emulator) -> None:
    """Two jobs with the same source into one lake (or two hosts): the second meets the first's
    claim on the refresh token, waits for its answer and uses its access token."""
    lake = tmp_path / "lake"
    a, b = (job_file(tmp_path / f"{name}.yaml", emulator, str(lake)) for name in ("a", "b"))
    vendor = emulator.acme.refresh_tokens
    first = vendor.grant()
    vendor.gate.clear()  # the token endpoint holds the first refresh until both runs are in
    log = tmp_path / "b.log"
    started: list[subprocess.Popen[str]] = []
    try:
        started.append(start_cli("run", str(a), "--date", DATES[0], env=env(first)))
        wait_for(lambda: any(json.loads(p.read_text()).get("claim") for p in stored_tokens(lake)))
        started.append(start_cli("run", str(b), "--date", DATES[1], "--log-file", str(log), env=env(first)))
        wait_for(lambda: log.exists() and "is refreshing its access token; waiting for it" in log.read_text())
    finally:
        vendor.gate.set()
        outputs = [p.communicate(timeout=60) for p in started]
    assert [p.returncode for p in started] == [0, 0], outputs
    assert vendor.refreshes == 1 and vendor.refused == 0  # spent once, never twice

    emulator.acme.expire_access_tokens()
    result = run(b, DATES[2], first)  # the chain goes on from the token the first run stored
    assert result.returncode == 0, result.stdout + result.stderr
    assert vendor.refreshes == 2 and vendor.refused == 0
    assert_no_token(emulator, lake, *(text for pair in outputs for text in pair), log.read_text(), result.stdout, result.stderr)


def test_a_revoked_refresh_token_fails_naming_the_source_until_a_new_one_is_set(tmp_path: Path, emulator: Emulator) -> None:
    lake = tmp_path / "lake"
    job = job_file(tmp_path / "job.yaml", emulator, str(lake))
    vendor = emulator.acme.refresh_tokens
    first = vendor.grant()
    assert run(job, DATES[0], first).returncode == 0
    vendor.revoke()  # the user withdrew the app's access at the vendor
    emulator.acme.expire_access_tokens()
    failed = run(job, DATES[1], first)
    assert failed.returncode == 1
    [unit] = records(lake)[-1]["units"]
    for text in (unit["error"], failed.stdout + failed.stderr):
        assert "source 'acme'" in text and "invalid_grant" in text and "set the new refresh token" in text
    assert "Traceback" not in failed.stderr
    assert vendor.refused == 1  # asked once, not again for every unit or retry

    second = vendor.grant()  # authorized again: the job's ${ACME_REFRESH_TOKEN} now holds the new token
    again = run(job, DATES[1], second)
    assert again.returncode == 0, again.stdout + again.stderr
    emulator.acme.expire_access_tokens()
    assert run(job, DATES[2], second).returncode == 0  # its chain is the stored one now
    assert vendor.refreshes == 3 and vendor.reused == 0
    assert_no_token(emulator, lake, failed.stdout, failed.stderr, again.stdout, again.stderr)


def test_refresh_tokens_kept_in_s3_under_token_store(tmp_path: Path, emulator: Emulator, s3_bucket: str) -> None:
    """The chain kept by S3 conditional writes, under a prefix of its own (`token_store:`)."""
    vendor = emulator.acme.refresh_tokens
    job = job_file(tmp_path / "job.yaml", emulator, "s3://lake/raw", s3={"endpoint_url": s3_bucket}, token_store="s3://lake/secrets")
    first = vendor.grant()
    outputs = []
    for date in DATES[:2]:
        emulator.acme.expire_access_tokens()
        result = run(job, date, first)
        assert result.returncode == 0, result.stdout + result.stderr
        outputs += [result.stdout, result.stderr]
    assert vendor.refreshes == 2 and vendor.refused == 0
    client = s3(s3_bucket)
    objects = {o["Key"]: client.get_object(Bucket="lake", Key=o["Key"])["Body"].read() for o in client.list_objects_v2(Bucket="lake")["Contents"]}
    assert [key.split("/")[:3] for key in objects if "/tokens/" in key] == [["secrets", "_apilake", "tokens"]]
    everything = "\n".join(outputs) + "\n".join(v.decode("latin-1") + k for k, v in objects.items())
    for secret in secrets_of(emulator):
        assert secret not in everything
