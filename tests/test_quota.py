"""The quota ledger without a network: fingerprints, quota days, and compare-and-swap reservations."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import pytest

from apilake.destinations.local import LocalDestination
from apilake.fetch.quota import DailyQuota, DailyQuotaSpent, block_size, credential_fingerprint, ledger_key, quota_day, quota_use, resets_at
from apilake.jobfile import Source

TOKEN = "tok-quota-8d7c6b"


def source(**settings) -> Source:
    base = {
        "name": "dataai",
        "base_url": "https://api.example.com",
        "token": TOKEN,
        "requests_per_day": 10,
        "endpoints": [{"name": "e", "kind": "json", "path": "/e"}],
    }
    return Source.model_validate({**base, **settings})


def test_the_fingerprint_names_the_credential_at_its_origin_without_revealing_it() -> None:
    fingerprint = credential_fingerprint(source())
    assert fingerprint == credential_fingerprint(source(name="other", requests_per_day=5))  # same key, same ledger
    assert fingerprint != credential_fingerprint(source(token="tok-another"))
    assert fingerprint != credential_fingerprint(source(base_url="https://api.other.com"))
    assert fingerprint == credential_fingerprint(source(token=None, headers={"X-Api-Key": TOKEN}))  # the same key, sent otherwise
    assert credential_fingerprint(source(headers={"Accept": "json"})) == fingerprint  # not a credential header
    assert TOKEN not in ledger_key(source()) and TOKEN[-6:] not in fingerprint


@pytest.mark.parametrize(
    "zone, now, day, resets",
    [
        ("UTC", "2026-11-27T23:59:00+00:00", "2026-11-27", "2026-11-28T00:00:00+00:00"),
        ("Asia/Seoul", "2026-11-27T15:30:00+00:00", "2026-11-28", "2026-11-29T00:00:00+09:00"),
        ("America/Los_Angeles", "2026-11-27T07:00:00+00:00", "2026-11-26", "2026-11-27T00:00:00-08:00"),
    ],
)
def test_the_quota_day_and_its_reset_follow_quota_timezone(zone: str, now: str, day: str, resets: str) -> None:
    src, instant = source(quota_timezone=zone), dt.datetime.fromisoformat(now)
    assert quota_day(src, instant).isoformat() == day
    assert resets_at(src, instant) == dt.datetime.fromisoformat(resets)


def test_the_spent_message_says_when_the_quota_resets() -> None:
    message = str(DailyQuotaSpent.of(source(quota_timezone="Asia/Seoul")))
    assert "10 requests_per_day" in message and "resets at" in message and "Asia/Seoul" in message


@pytest.mark.parametrize("per_day, block", [(1, 1), (5, 1), (100, 5), (10_000, 100)])
def test_blocks_are_small(per_day: int, block: int) -> None:
    assert block_size(per_day) == block


def test_processes_sharing_a_ledger_never_take_more_than_the_quota_and_give_back_what_they_did_not_use(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, dict]:
        store = LocalDestination(tmp_path)
        src = source(requests_per_day=37)
        quotas = [DailyQuota(store, src) for _ in range(3)]  # three processes' shares
        taken = 0

        async def spend(quota: DailyQuota, n: int) -> None:
            nonlocal taken
            for _ in range(n):
                try:
                    await quota.take()
                except DailyQuotaSpent:
                    return
                taken += 1
                await asyncio.sleep(0)

        await asyncio.gather(spend(quotas[0], 30), spend(quotas[1], 30), spend(quotas[2], 2))
        assert quotas[0].spent or quotas[1].spent
        for quota in quotas:
            await quota.give_back()
        return taken, json.loads((tmp_path / ledger_key(src)).read_text())

    taken, ledger = asyncio.run(scenario())
    assert 37 - 3 * block_size(37) <= taken <= 37
    (day,) = ledger["days"].values()
    assert day == {"used": taken, "limit": 37}  # unused reservations went back


def test_quota_use_reports_every_quota_source_of_today_even_before_its_first_request(tmp_path: Path) -> None:
    async def scenario() -> list[tuple[str, str, dict]]:
        store = LocalDestination(tmp_path)
        spent, fresh = source(requests_per_day=20), source(name="fresh", token="tok-fresh", quota_timezone="Asia/Seoul")
        quota = DailyQuota(store, spent)
        await quota.take()
        await quota.give_back()
        return await quota_use(store, [spent, fresh, source(name="unlimited", requests_per_day=None)])

    seoul = quota_day(source(quota_timezone="Asia/Seoul"))
    assert asyncio.run(scenario()) == [
        ("dataai", f"{quota_day(source())} UTC", {"used": 1, "limit": 20}),
        ("fresh", f"{seoul} Asia/Seoul", {"used": 0, "limit": 10}),  # no ledger yet: nothing used of its quota
    ]
