import pytest
from pyrate_limiter import Limiter

from apilake.fetch.limits import local_rates
from apilake.jobfile import Source


def source(**limits) -> Source:
    return Source.model_validate({"name": "s", "base_url": "http://h", "endpoints": [{"name": "e", "kind": "json", "path": "/"}], **limits})


@pytest.mark.parametrize(
    "limits, expected",
    [
        ({}, []),
        ({"requests_per_second": 100}, [(100, 1035)]),
        ({"requests_per_minute": 30}, [(30, 60625)]),
        ({"requests_per_second": 100, "requests_per_minute": 6000}, [(100, 1035)]),  # the minute adds nothing
        ({"requests_per_second": 100, "requests_per_minute": 1000}, [(100, 1035), (1000, 60625)]),
        ({"requests_per_second": 10, "requests_per_minute": 5}, [(5, 60625)]),  # the minute is stricter even per second
    ],
)
def test_local_rates_keep_the_windows_that_bind(limits: dict, expected: list) -> None:
    rates = local_rates(source(**limits))
    assert [(r.limit, r.interval) for r in rates] == expected
    if rates:
        Limiter(rates)  # pyrate-limiter accepts them
