"""HTTP for one source: credentials scoped to its origin, redirects, rate limits, timeouts, retries.

Every request goes through libcurl (`fetch.download`). Redirects are followed here, hop by hop,
because the source's token and secret headers must only ever go to the source's own origin: the
vendor answers file requests with a 302 to a pre-signed object-store URL on another host, which
gets no credentials at all. (httpx remains for an OAuth2 token endpoint, `fetch.auth`: a request
an hour.)
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import TypeVar
from urllib.parse import quote, urljoin, urlsplit

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_before_delay
from tenacity.wait import wait_random_exponential

from apilake import __version__
from apilake.destinations import Destination
from apilake.errors import IntegrityError, TransferError, is_transient
from apilake.fetch.credentials import credentials_for
from apilake.fetch.download import Download, Timeouts, Transport
from apilake.fetch.limits import Budget
from apilake.fetch.ratelimit_headers import Pacing, beyond_cap, floored, parse_retry_after
from apilake.fetch.rules import Answer, active
from apilake.headers import header_problem
from apilake.integrity import StreamCheck
from apilake.jobfile import Retry, Source
from apilake.redact import ERROR_DETAIL_CHARS, Redactor
from apilake.traffic import count_request, count_response

log = logging.getLogger("apilake")

#: The `timeouts.total` clock of the attempt in progress (`SourceClient.retrying`), started when
#: the attempt sends its first hop (`SourceClient._start_clock`).
_ATTEMPT_CLOCK: ContextVar[asyncio.Timeout | None] = ContextVar("attempt_clock", default=None)
T = TypeVar("T")


def wire_url(url: str) -> str:
    """`url` as it goes on the wire: characters a URL may not hold (non-ASCII, controls, spaces)
    percent-encoded as browsers do, the rest as written. A vendor's listing or Location header
    can hold anything; libcurl takes ASCII only."""
    return url if url.isascii() and url.isprintable() and " " not in url else quote(url, safe="!#$%&'()*+,/:;=?@[]~")


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # a port out of range, e.g. in a redirect's Location
        raise TransferError(f"not a usable URL (bad port): {parts.scheme}://{parts.hostname}/...") from None
    return parts.scheme, (parts.hostname or "").lower(), port


class SourceClient:
    """The one HTTP client of a source, shared by all of its units in this process."""

    def __init__(self, source: Source, redact: Redactor, budget: Budget, tokens: Destination | None = None) -> None:
        """`tokens`: the token store of a source with rotating refresh tokens (`fetch.refresh`)."""
        self.source = source
        self.redact = redact
        self.budget = budget
        self._origin = origin(source.base_url)
        t = source.timeouts
        self._credentials = credentials_for(source, None, redact, tokens)
        self._transport = Transport(f"apilake/{__version__}", Timeouts(connect=t.connect, read=t.read), source.concurrency)
        self.pacing = Pacing(source.rate_limit_headers, source.retry)
        self._in_flight = asyncio.Semaphore(source.concurrency)

    async def close(self) -> None:
        await self._credentials.aclose()
        await self._transport.close()

    @asynccontextmanager
    async def download(
        self,
        url: str,
        make_check: Callable[[int | None], StreamCheck],
        *,
        method: str = "GET",
        body: str | None = None,
        decode: bool = False,
        headers: Mapping[str, str] = {},
    ) -> AsyncIterator[Download]:
        """Send a request (GET, or `method` with a JSON `body`, with the endpoint's own `headers`
        to the source's origin only) and yield it once a 2xx answered;
        its body's chunks are checked by the `StreamCheck` that `make_check` makes from the
        Content-Length. `decode`: a compressed answer (Content-Encoding) is welcome and
        inflated, as a JSON page may be; a file is landed as sent. Non-2xx statuses and
        transport failures (also those met while the caller reads the body) become redacted
        `TransferError`s."""
        content = body.encode() if body is not None else None
        for name, value in headers.items():  # rendered with values from the vendor (a fan-out's): checked as sent
            if problem := header_problem(name, value):
                raise TransferError(self.redact(f"{problem}; refused before sending"))

        async def send(hop: str, credentials: dict[str, str], method: str) -> Download:
            sent = content if method != "GET" else None  # a 303's GET drops the body
            started = Download(self._transport, hop, make_check, method=method, body=sent, decode=decode)
            started.start({**headers, **credentials} if origin(hop) == self._origin else credentials)
            try:
                await started.started()
            except BaseException as exc:  # cancellation and `timeouts.total` too: never leave it running
                await started.aclose()
                if isinstance(exc, TransferError) and not isinstance(exc, IntegrityError):
                    raise TransferError(self.redact(f"{exc} ({hop})"), transient=exc.transient) from None
                raise
            return started

        # Admission lets `concurrency` units run, but a unit's pages fetched ahead (`fetch.ahead`)
        # are more requests: every request takes one of the source's places here.
        async with self._in_flight:
            response = await self._follow(url, send, method, body=content is not None)
            try:
                yield response
            except IntegrityError:
                raise
            except TransferError as exc:
                if exc.status is not None:
                    raise
                raise TransferError(self.redact(f"{exc} ({url})"), transient=exc.transient) from None
            finally:
                await response.aclose()

    async def _follow(self, url: str, send: Callable[[str, dict[str, str], str], Awaitable[Download]], method: str, *, body: bool) -> Download:
        """Send a request hop by hop: redirects are followed here so that credentials reach only
        the source's origin (a body neither: a 307 or 308 that would re-send it elsewhere is
        refused), at most `max_redirects` of them; a 401 there renews them once; a non-2xx answer
        becomes a `TransferError`."""
        first, redirects, renewed = url, 0, False
        while True:
            url = wire_url(url)
            own_origin = origin(url) == self._origin
            headers = await self._headers_for(url)
            hop = self._credentials.url(url) if own_origin else url
            response = await self._paced(own_origin, functools.partial(send, hop, headers, method))
            count_response(response.status_code)
            if response.is_redirect:
                await response.aclose()
                redirects += 1
                if redirects > self.source.max_redirects:
                    raise TransferError(self.redact(f"more than {self.source.max_redirects} redirects (max_redirects) starting at {first}"))
                target = urljoin(url, response.headers["location"])
                if response.status_code in (301, 302, 303):  # RFC 9110 15.4: the redirected request is a GET
                    method = "GET"
                elif body and method != "GET" and origin(target) != self._origin:  # a 307 or 308 keeps the body
                    raise TransferError(self.redact(
                        f"a {response.status_code} redirect from {url} to another origin ({target}) would re-send the "
                        f"{method} body there; refused: what the source's requests carry stays with the source"
                    ))  # fmt: skip
                url = target
                continue
            if response.status_code == 401 and own_origin and not renewed and await self._credentials.renew(headers):
                await response.aclose()
                renewed = True  # renew once: a second 401 is the answer
                continue
            if response.is_success:
                return response
            await response.aclose()
            error = self._status_error(response)
            active().judge(Answer(response.status_code, response.headers, response.error_body), str(error), self.redact)
            raise error

    async def _paced(self, own_origin: bool, send: Callable[[], Awaitable[Download]]) -> Download:
        """Send one hop; one to the source's own origin waits while the vendor's rate-limit
        headers say its window is spent, and its answer tells the window (`Pacing`)."""
        if not own_origin:
            self._start_clock()
            return await send()
        await self.pacing.before()
        self._start_clock()
        try:
            response = await send()
        except BaseException:
            self.pacing.gone()
            raise
        self.pacing.after(response.status_code, response.headers)
        return response

    def _start_clock(self) -> None:
        """Start the attempt's `timeouts.total` at its first send: waiting for a place, the rate
        budget, a token or the vendor's window is not the request taking long."""
        clock = _ATTEMPT_CLOCK.get()
        if clock is not None and clock.when() is None:
            clock.reschedule(asyncio.get_running_loop().time() + self.source.timeouts.total)

    async def _headers_for(self, url: str) -> dict[str, str]:
        """The one place a request gets credentials (headers here, a query key in `_follow`): only
        requests to the source's own origin, each of which also spends the source's rate budget."""
        if origin(url) != self._origin:
            return {}
        await self.budget.acquire()
        count_request()
        headers = await self._credentials.headers()
        for name, value in headers.items():  # the job file's were checked; an OAuth2 access token arrives now
            problem = header_problem(name, value)
            if problem:
                raise TransferError(f"{problem}; refused before sending")
        return headers

    def _status_error(self, response: Download) -> TransferError:
        status = response.status_code
        detail = response.error_body.decode("utf-8", "replace").strip().replace("\n", " ")
        message = self.redact(f"HTTP {status} {response.reason_phrase} from {urlsplit(str(response.url))._replace(query='').geturl()}")
        if detail:
            message += f": {self.redact.cut(detail, ERROR_DETAIL_CHARS, truncated=response.error_body_cut)}"
        return TransferError(
            message,
            status=status,
            transient=is_transient(status),
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )

    async def retrying(self, policy: Retry, attempt: Callable[[], Awaitable[T]], *, what: str) -> tuple[T, int]:
        """Run `attempt` until it succeeds or the policy gives up; returns its result and the attempt count.

        Only transient `TransferError`s are retried, with exponential back-off and full jitter;
        a `Retry-After` from the server wins over the back-off. Every attempt runs under the
        source's whole-request timeout from its first send on, so a stalled server can never hang a run.
        """
        total = self.source.timeouts.total
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.attempts) | stop_before_delay(policy.budget_seconds),
            wait=_RetryAfterOrBackoff(policy),
            retry=retry_if_exception(lambda exc: isinstance(exc, TransferError) and exc.transient),
            before_sleep=lambda state: log.warning("retrying %s after attempt %d: %s", what, state.attempt_number, state.outcome and state.outcome.exception()),
            reraise=True,
        )

        async def bounded() -> T:
            try:
                async with asyncio.timeout(None) as clock:  # started by the attempt's first send (`_paced`)
                    started = _ATTEMPT_CLOCK.set(clock)
                    try:
                        return await attempt()
                    finally:
                        _ATTEMPT_CLOCK.reset(started)
            except TransferError as exc:
                final = beyond_cap(exc, policy)
                if final is exc:
                    raise
                raise final from None
            except TimeoutError:
                raise TransferError(f"{what}: no complete response within {total:g} s (timeouts.total)", transient=True) from None

        try:
            result: T = await retrying(bounded)
        except TransferError as exc:
            exc.attempts = retrying.statistics.get("attempt_number", 1)
            raise
        return result, retrying.statistics.get("attempt_number", 1)


class _RetryAfterOrBackoff:
    def __init__(self, policy: Retry) -> None:
        self._policy = policy
        self._backoff = wait_random_exponential(multiplier=policy.backoff_initial, max=policy.backoff_max)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransferError) and exc.retry_after is not None:
            return floored(exc.retry_after, self._policy)
        return self._backoff(state)
