"""One vocabulary of outcomes: exit codes by error type, and one meaning of a transient HTTP status
wherever apilake sends a request (a source's API and its OAuth2 token endpoint)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from apilake.errors import (
    ApilakeError,
    DestinationError,
    ExecutorError,
    ExitCode,
    JobFileError,
    ListenError,
    MissingExtraError,
    RunLockedError,
    StateFileError,
    TableError,
    TemplateError,
    TransferError,
    is_transient,
)
from apilake.fetch.auth import forget_tokens
from apilake.fetch.credentials import credentials_for
from apilake.jobfile import Source
from apilake.redact import Redactor


@pytest.mark.parametrize(("error", "code"), [
    (ApilakeError, ExitCode.FAILED),
    (TransferError, ExitCode.FAILED),
    (TableError, ExitCode.FAILED),
    (JobFileError, ExitCode.USAGE),
    (TemplateError, ExitCode.USAGE),
    (DestinationError, ExitCode.USAGE),  # from `apilake run` and from each run of `apilake schedule` alike
    (ListenError, ExitCode.USAGE),
    (StateFileError, ExitCode.USAGE),
    (ExecutorError, ExitCode.USAGE),
    (MissingExtraError, ExitCode.USAGE),
    (RunLockedError, ExitCode.LOCKED),
])  # fmt: skip
def test_each_error_type_has_one_exit_code(error: type[ApilakeError], code: ExitCode) -> None:
    assert error("x").exit_code is code


def test_a_listen_error_is_not_a_job_file_error() -> None:
    assert not issubclass(ListenError, JobFileError)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 425, 428, 429, 500, 503])
def test_the_token_endpoint_retries_what_a_source_s_api_retries(status: int) -> None:
    """A vendor that answers its token endpoint 428 (its blacklisting) or 425 is tried again, as its API would be."""
    forget_tokens()
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(status, text="no")))
    source = Source.model_validate(
        {
            "name": "s",
            "base_url": "https://api.test",
            "endpoints": [{"name": "e", "kind": "json", "path": "/x"}],
            "auth": {"type": "oauth2_client_credentials", "token_url": "https://auth.test/token", "client_id": "id", "client_secret": "s3cret"},
        }
    )

    async def token() -> None:
        try:
            await credentials_for(source, http, Redactor()).headers()
        finally:
            await http.aclose()

    with pytest.raises(TransferError) as info:
        asyncio.run(token())
    assert info.value.status == status and info.value.transient is is_transient(status)
    forget_tokens()
