"""Response rules and the vendor's waits: the pure parts, table-driven (`fetch.rules`,
`fetch.ratelimit_headers`, the rule models of `jobfile`)."""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import time
from typing import Any

import pytest
from pydantic import ValidationError

from apilake.errors import TransferError, UnitIgnored
from apilake.fetch.ratelimit_headers import Pacing, beyond_cap, parse_reset, structured
from apilake.fetch.rules import Answer, Rules, matches
from apilake.jobfile import RateLimitHeaders, ResponseRule, Retry, status_ranges
from apilake.redact import Redactor


@pytest.mark.parametrize(
    "spec, ranges",
    [(404, [(404, 404)]), ("4xx", [(400, 499)]), ("500-503", [(500, 503)]), ([404, "5XX"], [(404, 404), (500, 599)]), (" 429 ", [(429, 429)])],
)
def test_status_ranges(spec: Any, ranges: list[tuple[int, int]]) -> None:
    assert status_ranges(spec) == ranges


@pytest.mark.parametrize("spec", [600, "6xx", "4x", "503-500", True, "abc", 99])
def test_status_ranges_refuse_what_is_no_status(spec: Any) -> None:
    with pytest.raises(ValueError, match="status"):
        status_ranges(spec)


@pytest.mark.parametrize(
    "rule, message",
    [
        ({"action": "retry"}, "matches every response"),
        ({"status": "100-599", "action": "fail"}, "matches every response"),
        ({"status": 401, "action": "ignore"}, "ignore on a 401"),
        ({"status": "4xx", "body_contains": "no data", "action": "ignore"}, "ignore on a 401"),
        ({"body_contains": "no data", "action": "ignore"}, "ignore needs a status"),
        ({"status": 404, "action": "retry", "message": "x"}, "message: goes with action: fail"),
        ({"status": 503, "action": "retry", "after": 3}, "after: goes with action: retry_after"),
        ({"status": 503, "action": "retry_after", "after": -1}, "cannot be negative"),
        ({"header": "X Bad", "action": "retry"}, "header"),
    ],
)
def test_rules_that_cannot_be_meant_are_refused(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ResponseRule.model_validate(rule)


def test_retry_floor_above_cap_is_refused() -> None:
    with pytest.raises(ValidationError, match="min_retry_after"):
        Retry(min_retry_after=10, max_retry_after=5)


ERROR_200 = b'{"error": {"code": "account_suspended"}}'


@pytest.mark.parametrize(
    "rule, answer, matched",
    [
        ({"status": 404, "action": "fail"}, Answer(404, {}, b""), True),
        ({"status": "5xx", "action": "retry"}, Answer(404, {}, b""), False),
        ({"status": [404, 410], "action": "fail"}, Answer(410, {}, b""), True),
        ({"body_contains": "suspended", "action": "fail"}, Answer(200, {}, ERROR_200), True),
        ({"body_path": "error.code == 'account_suspended'", "action": "fail"}, Answer(200, {}, ERROR_200), True),
        ({"body_path": "error.code == 'rate_limited'", "action": "fail"}, Answer(200, {}, ERROR_200), False),
        ({"body_path": "error", "action": "fail"}, Answer(200, {}, b"not json"), False),
        ({"header": "X-Retry-In", "action": "retry"}, Answer(200, {"x-retry-in": "1"}, b""), True),
        ({"header": "X-Status: quota", "action": "retry"}, Answer(200, {"x-status": "over quota"}, b""), True),
        ({"header": "X-Status: quota", "action": "retry"}, Answer(200, {"x-status": "fine"}, b""), False),
        ({"status": 200, "header": "X-Retry-In", "action": "retry"}, Answer(503, {"x-retry-in": "1"}, b""), False),
    ],
)
def test_a_rule_matches_when_every_condition_holds(rule: dict[str, Any], answer: Answer, matched: bool) -> None:
    assert matches(ResponseRule.model_validate(rule), answer) is matched


def judge(rules: list[dict[str, Any]], answer: Answer) -> BaseException | None:
    try:
        Rules([(f"on_response[{n}]", ResponseRule.model_validate(r)) for n, r in enumerate(rules)]).judge(answer, "u", Redactor([]))
    except (TransferError, UnitIgnored) as exc:
        return exc
    return None


def test_the_first_matching_rule_decides_and_none_leaves_it_to_the_built_in_rules() -> None:
    rules = [{"status": 404, "body_contains": "no data", "action": "ignore"}, {"status": "4xx", "action": "fail", "message": "gone"}]
    assert isinstance(judge(rules, Answer(404, {}, b"no data for this date")), UnitIgnored)
    failed = judge(rules, Answer(404, {}, b"other"))
    assert isinstance(failed, TransferError) and not failed.transient and "gone (on_response[1])" in str(failed)
    assert judge(rules, Answer(200, {}, b"{}")) is None


@pytest.mark.parametrize(
    "rule, headers, transient, wait",
    [
        ({"status": 200, "action": "retry"}, {}, True, None),
        ({"status": 200, "action": "retry"}, {"retry-after": "4"}, True, 4.0),
        ({"status": 200, "action": "retry_after", "after": 7}, {}, True, 7.0),
        ({"status": 200, "action": "retry_after", "after": "X-Retry-In"}, {"x-retry-in": "3"}, True, 3.0),
        ({"status": 200, "action": "retry_after"}, {"retry-after": "2"}, True, 2.0),
        ({"status": 200, "action": "retry_after", "after": "X-Retry-In"}, {}, True, None),  # not told: back-off
        ({"status": 200, "action": "fail"}, {}, False, None),
    ],
)
def test_actions_become_what_the_retry_policy_reads(rule: dict[str, Any], headers: dict[str, str], transient: bool, wait: float | None) -> None:
    exc = judge([rule], Answer(200, headers, b"{}"))
    assert isinstance(exc, TransferError) and exc.transient is transient and exc.retry_after == wait


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    "value, seconds",
    [
        (None, None),
        ("", None),
        ("30", 30.0),
        ("0", 0.0),
        ("2.5", 2.5),
        (str(int(NOW) + 42), 42.0),
        (str(int(NOW) - 5), 0.0),
        (email.utils.formatdate(NOW + 60, usegmt=True), 60.0),
        ("soon", None),
        ("-3", None),
        ("nan", None),
    ],
)
def test_parse_reset(value: str | None, seconds: float | None) -> None:
    assert parse_reset(value, now=NOW) == seconds


@pytest.mark.parametrize("wait, final", [(None, False), (10.0, False), (300.0, False), (301.0, True)])
def test_a_wait_beyond_the_cap_fails_at_once(wait: float | None, final: bool) -> None:
    exc = TransferError("HTTP 429", status=429, transient=True, retry_after=wait)
    out = beyond_cap(exc, Retry(max_retry_after=300))
    assert (out is not exc) is final
    assert out.transient is not final
    if final:
        assert "beyond retry.max_retry_after (300 s)" in str(out)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_pacing_counts_requests_in_flight_against_what_is_left() -> None:
    clock = Clock()
    pacing = Pacing(RateLimitHeaders(margin=1), Retry(), clock=clock)

    async def go() -> None:
        for _ in range(3):
            await pacing.before()  # nothing told yet: no wait
        pacing.after(200, {"x-ratelimit-remaining": "4", "x-ratelimit-reset": "30"})  # 2 still in flight: 4 - 1 - 2 = 1 left
        await pacing.before()
        assert pacing._left == 0
        waiting = asyncio.create_task(pacing.before())
        await asyncio.sleep(0.01)
        assert not waiting.done()  # held until the reset, 30 s away on the fake clock
        waiting.cancel()

    asyncio.run(go())


def test_pacing_takes_no_count_from_an_answer_of_a_window_that_is_over() -> None:
    pacing = Pacing(RateLimitHeaders(margin=0), Retry(), clock=Clock())

    async def go() -> None:
        await pacing.before()
        pacing.after(200, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "0"})
        await asyncio.wait_for(pacing.before(), 1)  # a late answer from before the reset holds nothing

    asyncio.run(go())


def test_pacing_reads_the_ietf_names_and_a_reset_beyond_the_cap_fails_the_request() -> None:
    pacing = Pacing(RateLimitHeaders(margin=0), Retry(max_retry_after=60), clock=Clock())

    async def go() -> None:
        await pacing.before()
        pacing.after(200, {"ratelimit-remaining": "0", "ratelimit-reset": "3600"})
        with pytest.raises(TransferError, match=r"resets in 3600 s, beyond retry\.max_retry_after"):
            await pacing.before()

    asyncio.run(go())


@pytest.mark.parametrize(
    "headers, setting, value",
    [
        ({"ratelimit": "limit=100, remaining=50, reset=30"}, "remaining", "50"),
        ({"ratelimit": "limit=100, remaining=50, reset=30"}, "reset", "30"),
        ({"ratelimit": "limit=100, remaining=50, reset=30"}, "limit", "100"),
        ({"ratelimit": '"default";r=7;t=12', "ratelimit-policy": '"default";q=100;w=60'}, "remaining", "7"),
        ({"ratelimit": '"default";r=7;t=12', "ratelimit-policy": '"default";q=100;w=60'}, "reset", "12"),
        ({"ratelimit": '"default";r=7;t=12', "ratelimit-policy": '"default";q=100;w=60'}, "limit", "100"),
        ({"ratelimit": '"burst";r=7'}, "reset", None),
        ({}, "remaining", None),
    ],
)
def test_the_ietf_drafts_structured_field(headers: dict[str, str], setting: str, value: str | None) -> None:
    assert structured(headers, setting) == value


def test_pacing_reads_the_structured_field_when_no_header_is_named() -> None:
    pacing = Pacing(RateLimitHeaders(margin=0), Retry(max_retry_after=60), clock=Clock())

    async def go() -> None:
        await pacing.before()
        pacing.after(200, {"ratelimit": '"default";r=0;t=3600'})
        with pytest.raises(TransferError, match="resets in 3600 s"):
            await pacing.before()

    asyncio.run(go())


def test_pacing_off_ignores_the_headers() -> None:
    pacing = Pacing(RateLimitHeaders.model_validate(False), Retry(), clock=Clock())

    async def go() -> None:
        await pacing.before()
        pacing.after(429, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "3600", "retry-after": "3600"})
        await asyncio.wait_for(pacing.before(), 1)

    asyncio.run(go())


def test_told_none_left_but_not_when_one_request_at_a_time_finds_out() -> None:
    """After the floor, one request probes the window; the others wait for its answer, not all go at once."""

    async def go() -> list[float]:
        pacing = Pacing(RateLimitHeaders(), Retry(min_retry_after=0.2))
        await pacing.before()
        pacing.after(200, {"x-ratelimit-remaining": "0"})  # none left, and no reset told
        started = time.monotonic()
        sent: list[float] = []

        async def request() -> None:
            await pacing.before()
            sent.append(time.monotonic() - started)
            await asyncio.sleep(0.05)
            pacing.after(200, {"x-ratelimit-remaining": "0"})

        await asyncio.gather(*(request() for _ in range(3)))
        return sent

    sent = asyncio.run(go())
    assert len(sent) == 3 and all(later - earlier >= 0.19 for earlier, later in itertools.pairwise(sent))
