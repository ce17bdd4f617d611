"""Executors without a cluster: choosing one, what travels to workers, the cluster budget's maths."""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path

import pytest

from apilake.errors import JobFileError
from apilake.executors import LocalExecutor, executor_factory
from apilake.fetch.limits import RequestBudget, windows
from apilake.jobfile import load_job

TOKEN = "tok-exec-5a4b3c"
JOB = """
sources:
  - name: dataai
    base_url: https://api.example.com
    token: ${DATAAI_TOKEN}
    headers: {X-Api-Key: "${VENDOR_API_KEY}"}
    requests_per_second: 5
    requests_per_minute: 30
    requests_per_day: 1000
    endpoints: [{name: details, kind: json, path: /v1/details}]
  - name: other
    base_url: https://other.example.com
    endpoints: [{name: things, kind: json, path: /things}]
"""


@pytest.fixture
def job(tmp_path: Path):
    path = tmp_path / "job.yaml"
    path.write_text(JOB)
    return load_job(path, environ={"DATAAI_TOKEN": TOKEN, "VENDOR_API_KEY": "key-0a1b2c", "SESSION_SECRET": "unused"})


def test_local_is_the_default(job) -> None:
    assert executor_factory(job) is executor_factory(job, "local")
    assert executor_factory(job, "local", "tcp://127.0.0.1:8786") is executor_factory(job)  # --executor local wins


def test_dask_needs_a_scheduler_address(job, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with pytest.raises(JobFileError, match="needs a scheduler address"):
        executor_factory(job, "dask")
    assert executor_factory(job, scheduler="tcp://127.0.0.1:8786") is not executor_factory(job)  # --scheduler means dask
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:8786")
    assert executor_factory(job, "dask") is not executor_factory(job)
    assert executor_factory(job.model_copy(update={"executor": "dask", "scheduler_address": "tcp://h:1"})) is not executor_factory(job)


def test_the_payload_carries_secrets_to_workers_but_never_shows_them(job) -> None:
    pytest.importorskip("distributed")
    from apilake.executors.dask import RunPayload, Sealed, source_limits

    source = job.sources[0]
    payload = RunPayload("RUN", job.model_copy(update={"sources": [source]}), "/lake", False, source_limits("RUN", source), 20)
    again = pickle.loads(pickle.dumps(payload))
    assert again.source.token == TOKEN
    assert set(again.job.secrets()) == {TOKEN, "key-0a1b2c"}  # `${VENDOR_API_KEY}` fills X-Api-Key: a credential header
    assert TOKEN not in repr(payload) and TOKEN not in repr(again) and "key-0a1b2c" not in repr(payload)
    sealed = Sealed(("https://api.example.com/x?api_key=SECRET", None))
    assert "SECRET" not in repr(sealed) and pickle.loads(pickle.dumps(sealed)).value == sealed.value


def test_cluster_semaphores_mirror_the_local_windows(job) -> None:
    pytest.importorskip("distributed")
    from apilake.executors.dask import LEASE_SLACK_S, hold_seconds, source_limits

    limits = source_limits("20261126T000000.000000Z-abcdef", job.sources[0])
    assert windows(job.sources[0]) == [(5, 1.0), (30, 60.0)]
    assert [(calls, seconds) for _name, calls, seconds in limits.windows] == windows(job.sources[0])
    names = [name for name, _leases, _timeout in limits.semaphores()]
    assert names == [  # the daily quota is not a semaphore: it is the ledger in the destination
        "apilake-20261126T000000.000000Z-abcdef-dataai-per-1s",
        "apilake-20261126T000000.000000Z-abcdef-dataai-per-60s",
    ]
    timeouts = [timeout for _name, _leases, timeout in limits.semaphores()]
    # a lease is held a whole window (plus a margin), and the scheduler never drops it earlier
    for (_name, _calls, seconds), timeout in zip(limits.windows, timeouts, strict=True):
        assert seconds + 0.2 < hold_seconds(seconds) < seconds * 1.02 + 0.3
        assert timeout == hold_seconds(seconds) + LEASE_SLACK_S
    assert list(source_limits("R", job.sources[1]).semaphores()) == []  # no limits, no semaphores


def test_local_executor_keeps_a_budget_per_source(job, tmp_path: Path) -> None:
    from apilake.destinations import open_destination
    from apilake.redact import Redactor

    async def budgets() -> dict[str, RequestBudget]:
        executor = LocalExecutor(job, open_destination(str(tmp_path)), Redactor(job.secrets()), force=False, on_result=lambda r: None)
        async with executor:
            assert not executor.spent("dataai") and not executor.spent("other")
            return dict(executor._budgets)

    found = asyncio.run(budgets())
    assert found["dataai"].quota is not None and found["dataai"].quota.per_day == 1000  # type: ignore[attr-defined]
    assert found["other"].quota is None
