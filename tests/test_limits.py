import asyncio
import time

import pytest
from pyrate_limiter import Limiter

from apilake.fetch.limits import RequestBudget, local_rates
from apilake.jobfile import Source


def source(**limits) -> Source:
    return Source.model_validate({"name": "s", "base_url": "http://h", "endpoints": [{"name": "e", "kind": "json", "path": "/"}], **limits})


@pytest.mark.parametrize(
    "limits, expected",
    [
        ({}, []),
        ({"requests_per_second": 100}, [(100, 1)]),
        ({"requests_per_minute": 30}, [(30, 60)]),
        ({"requests_per_second": 100, "requests_per_minute": 6000}, [(100, 1)]),  # the minute adds nothing
        ({"requests_per_second": 100, "requests_per_minute": 1000}, [(100, 1), (1000, 60)]),
        ({"requests_per_second": 10, "requests_per_minute": 5}, [(5, 60)]),  # the minute is stricter even per second
    ],
)
def test_local_rates_keep_the_windows_that_bind(limits: dict, expected: list[tuple[int, int]]) -> None:
    """(calls, stated seconds) of each window kept; each is a little longer than stated, so that a
    request's way to the vendor cannot squeeze one call too many into the vendor's window, but not
    so much longer that it wastes the budget (at most 2 % + 50 ms)."""
    rates = local_rates(source(**limits))
    assert [r.limit for r in rates] == [calls for calls, _ in expected]
    for rate, (_, seconds) in zip(rates, expected, strict=True):
        assert seconds * 1000 < rate.interval <= seconds * 1000 * 1.02 + 50
    if rates:
        Limiter(rates)  # pyrate-limiter accepts them


def test_no_window_of_the_stated_length_holds_one_call_too_many() -> None:
    budget = RequestBudget(source(requests_per_second=10))

    async def granted() -> list[float]:
        times = []
        for _ in range(11):
            await budget.acquire()
            times.append(time.monotonic())
        return times

    times = asyncio.run(granted())
    assert times[10] - times[0] >= 1.0  # the 11th call waits for the first one's second to pass
    assert times[10] - times[0] < 3  # and not much longer
