"""The job file: YAML in, a validated `Job` out.

Loading runs in four steps, each with errors that name the file and the key path:
YAML parse → profile overlay (`profiles:`) → `${VAR}` substitution → pydantic validation.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

import jmespath
import yaml
from jmespath.exceptions import JMESPathError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from apilake.errors import JobFileError, TemplateError
from apilake.headers import header_problem
from apilake.integrity import ChecksumName, VerifyMode
from apilake.redact import Redactor
from apilake.templates import check
from apilake.vocabulary import EndpointKind

# Names of headers (and of environment variables in a request) that carry credentials.
SECRET_NAME = re.compile(r"(?i)AUTH|TOKEN|SECRET|PASSW|KEY|CREDENTIAL|COOKIE|SIGNATURE|SESSION")
#: Settings that hold a credential: a `${VAR}` filling one is a secret whatever its name.
CREDENTIAL_SETTING = re.compile(r"^(sources\[\d+\]\.(token|auth\.(token|value|password|client_secret|refresh_token))|notify\.urls\[\d+\])$")
#: Parts of a request a credential may ride in (`/bot${BOT_TOKEN}/...`, a parameter, a body field):
#: there a `${VAR}` whose name says it is a credential is taken for one.
REQUEST_PART = re.compile(r"^sources\[\d+\]\.(base_url$|headers\.|endpoints\[\d+\]\.(path$|params\.|headers\.|body|matrix\.|create\.|poll\.))")
FILE_PLACEHOLDERS = frozenset({"file_kind", "dimension", "file_name", "url_path", "file_date"})
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]
Scalar = str | int | float | bool


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def _jmespath(expression: str) -> str:
    try:
        jmespath.compile(expression)
    except JMESPathError as exc:
        raise ValueError(f"{expression!r} is not a JMESPath expression ({exc})") from None
    return expression


#: A path into a response body, e.g. `data.urls`, `links.next`, `accounts[].id`.
JmesPath = Annotated[str, AfterValidator(_jmespath)]
HttpUrl = Annotated[str, Field(pattern=r"^https?://[^/\s]+(/\S*)?$")]


# -- auth: one model per scheme (the behaviour of each lives in `fetch.auth`) ------------------


def _header_values(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        problem = header_problem(name, value)
        if problem:
            raise ValueError(problem)
    return headers


def _authorization(token: str | None) -> str | None:
    return token if token is None else _header_values({"Authorization": token})["Authorization"]


class BearerAuth(_Model):
    """`Authorization: Bearer <token>`; `token:` on the source is a shorthand for it."""

    type: Literal["bearer"]
    token: Annotated[str, AfterValidator(_authorization)]

    def secrets(self) -> list[str]:
        return [self.token]


class ApiKeyAuth(_Model):
    """A key in a header or a query parameter, sent only to the source's origin."""

    type: Literal["api_key"]
    name: str = Field(min_length=1)
    value: str
    location: Literal["header", "query"] = "header"

    @model_validator(mode="after")
    def _sendable(self) -> ApiKeyAuth:
        if self.location == "header":
            _header_values({self.name: self.value})
        return self

    def secrets(self) -> list[str]:
        return [self.value]


class BasicAuth(_Model):
    """HTTP Basic (RFC 7617)."""

    type: Literal["basic"]
    username: str
    password: str

    @property
    def header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def secrets(self) -> list[str]:
        return [self.password, self.header.split(" ", 1)[1]]


class OAuth2Client(_Model):
    """What every OAuth 2.0 grant of apilake shares: the token endpoint and the client's credentials."""

    token_url: HttpUrl
    client_id: str
    client_secret: str
    scope: str | None = None
    client_auth: Literal["basic", "body"] = "basic"
    expiry_margin_seconds: float = Field(60.0, ge=0)

    @property
    def basic_header(self) -> str:
        return BasicAuth(type="basic", username=self.client_id, password=self.client_secret).header

    def secrets(self) -> list[str]:
        return [self.client_secret, self.basic_header.split(" ", 1)[1]]


class OAuth2ClientCredentials(OAuth2Client):
    """OAuth 2.0 client credentials grant (RFC 6749 section 4.4)."""

    type: Literal["oauth2_client_credentials"]


class OAuth2RefreshToken(OAuth2Client):
    """OAuth 2.0 refresh token grant (RFC 6749 section 6): the user's consent, given once, as a
    refresh token; a vendor that rotates it hands out a new one with each access token
    (`fetch.refresh` keeps the newest in the token store)."""

    type: Literal["oauth2_refresh_token"]
    refresh_token: str = Field(min_length=1)

    def secrets(self) -> list[str]:
        return [*super().secrets(), self.refresh_token]


Auth = Annotated[BearerAuth | ApiKeyAuth | BasicAuth | OAuth2ClientCredentials | OAuth2RefreshToken, Field(discriminator="type")]


# -- pagination: one model per style (the behaviour of each lives in `fetch.paginate`) ---------


DEFAULT_MAX_PAGES = 1000


class PagingStyle(_Model):
    max_pages: int = Field(DEFAULT_MAX_PAGES, ge=1, le=1_000_000, description="a unit with more pages fails")
    records_path: JmesPath | None = None  # where a page's records are (default: the page, a bare array); an empty list ends paging


class JsonLinkPaging(PagingStyle):
    type: Literal["json_link"]
    next_url_path: JmesPath


class HeaderLinkPaging(PagingStyle):
    type: Literal["header_link"]
    rel: str = "next"


class CursorPaging(PagingStyle):
    type: Literal["cursor"]
    cursor_path: JmesPath
    cursor_param: str = Field(min_length=1)
    has_more_path: JmesPath | None = None  # e.g. Stripe's `has_more`: false ends paging


class OffsetPaging(PagingStyle):
    type: Literal["offset"]
    limit: int = Field(ge=1)
    offset_param: str = "offset"
    limit_param: str = "limit"
    start: int = Field(0, ge=0)
    total_path: JmesPath | None = None
    total_header: Annotated[str, Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")] | None = None  # e.g. X-Total-Count

    @model_validator(mode="after")
    def _one_total(self) -> OffsetPaging:
        if self.total_path is not None and self.total_header is not None:
            raise ValueError("set total_path (the total in the body) or total_header (in a header), not both")
        return self


class PageNumberPaging(PagingStyle):
    type: Literal["page_number"]
    page_param: str = "page"
    start: int = Field(1, ge=0)
    total_pages_path: JmesPath | None = None


Paging = Annotated[JsonLinkPaging | HeaderLinkPaging | CursorPaging | OffsetPaging | PageNumberPaging, Field(discriminator="type")]


class Retry(_Model):
    """When to try a failed request again. Only transient failures are retried."""

    attempts: int = Field(5, ge=1, le=100)
    backoff_initial: float = Field(1.0, ge=0)
    backoff_max: float = Field(60.0, ge=0)
    budget_seconds: float = Field(900.0, gt=0)
    min_retry_after: float = Field(1.0, gt=0, description="the least wait a `Retry-After` (`0` too) gets: never a tight loop")
    max_retry_after: float = Field(300.0, gt=0, description="a longer `Retry-After` or rate-limit reset fails the unit instead")

    @model_validator(mode="after")
    def _floor_under_cap(self) -> Retry:
        if self.min_retry_after > self.max_retry_after:
            raise ValueError(f"min_retry_after ({self.min_retry_after:g}) is above max_retry_after ({self.max_retry_after:g})")
        return self


_STATUS = re.compile(r"^(?:(?P<code>[1-5]\d\d)|(?P<klass>[1-5])xx|(?P<low>[1-5]\d\d)-(?P<high>[1-5]\d\d))$")
StatusSpec = int | str


def status_ranges(spec: StatusSpec | list[StatusSpec]) -> list[tuple[int, int]]:
    """`404`, `"4xx"`, `"500-599"` or a list of them as inclusive ranges; a `ValueError` names what is wrong."""
    ranges = []
    for item in spec if isinstance(spec, list) else [spec]:
        found = _STATUS.match(str(item).strip().lower())
        if found is None or isinstance(item, bool):
            raise ValueError(f"status: {item!r} is not a status (write 404, 4xx or 500-599)")
        if found["code"]:
            ranges.append((int(found["code"]), int(found["code"])))
        elif found["klass"]:
            ranges.append((int(found["klass"]) * 100, int(found["klass"]) * 100 + 99))
        elif int(found["low"]) > int(found["high"]):
            raise ValueError(f"status: {item!r} ends before it starts")
        else:
            ranges.append((int(found["low"]), int(found["high"])))
    return ranges


class ResponseRule(_Model):
    """One rule of `on_response`: an answer that meets every condition given gets `action`.

    Rules are tried in order, an endpoint's before its source's, and both before the built-in
    ones (transient statuses retried, other non-2xx statuses failed); see `fetch.rules`.
    """

    status: StatusSpec | list[StatusSpec] | None = None
    body_contains: str | None = Field(None, min_length=1)
    body_path: JmesPath | None = Field(None, description="matches when this JMESPath is truthy in the JSON body")
    header: str | None = Field(None, pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+(:.*)?$", description="`Name` present, or `Name: text` in its value")
    action: Literal["ignore", "retry", "fail", "retry_after"]
    message: str | None = Field(None, description="fail: what the unit's error says")
    after: float | str | None = Field(None, description="retry_after: seconds, or the header holding them (default Retry-After)")

    @model_validator(mode="after")
    def _meaningful(self) -> ResponseRule:
        ranges = status_ranges(self.status) if self.status is not None else [(100, 599)]
        if self.body_contains is None and self.body_path is None and self.header is None and ranges[0] == (100, 599) and len(ranges) == 1:
            raise ValueError("the rule matches every response; give a status, body_contains, body_path or header")
        if self.action == "ignore":
            if self.status is None:
                raise ValueError("action: ignore needs a status (which answers may be taken for no data)")
            if any(low <= 401 <= high for low, high in ranges):
                raise ValueError("action: ignore on a 401 would hide a refused credential; fix the credential instead")
        if self.message is not None and self.action != "fail":
            raise ValueError("message: goes with action: fail")
        if self.after is not None and self.action != "retry_after":
            raise ValueError("after: goes with action: retry_after")
        if isinstance(self.after, (int, float)) and self.after < 0:
            raise ValueError("after: seconds to wait cannot be negative")
        return self

    @property
    def statuses(self) -> list[tuple[int, int]] | None:
        return None if self.status is None else status_ranges(self.status)


class RateLimitHeaders(_Model):
    """The vendor's rate-limit headers (`fetch.ratelimit_headers`); names left out are looked
    up among the common ones: `X-RateLimit-*`, then the IETF draft's `RateLimit-*`.
    `rate_limit_headers: false` turns reading them off."""

    enabled: bool = True
    remaining: str | None = None
    reset: str | None = None
    limit: str | None = None
    margin: int = Field(1, ge=0, description="requests kept in hand: at this many left, wait for the reset")

    @model_validator(mode="before")
    @classmethod
    def _off(cls, raw: Any) -> Any:
        return {"enabled": False} if raw is False else raw


class Timeouts(_Model):
    """Seconds; `total` bounds one whole request including its body, so a stall never hangs a run."""

    connect: float = Field(10.0, gt=0)
    read: float = Field(60.0, gt=0)
    total: float = Field(3600.0, gt=0)


class ForEach(_Model):
    """Fan-out: one child unit per value found in the parent endpoint's pages of the same date."""

    model_config = ConfigDict(populate_by_name=True)  # merged with `_Model`'s

    endpoint: Name
    values: JmesPath
    as_: Name = Field(alias="as")


class ReportCreate(_Model):
    """The request that creates a report; its answer holds the report id (`id_path`)."""

    method: Literal["GET", "POST"] = "POST"
    path: str
    params: dict[str, Scalar | list[Scalar]] = {}
    body: Any = None


class ReportPoll(_Model):
    """The request that asks how a report is doing, repeated until it is done or failed."""

    path: str
    params: dict[str, Scalar | list[Scalar]] = {}
    status_path: JmesPath
    done: list[str] = Field(min_length=1)
    failed: list[str] = []
    message_path: JmesPath | None = None  # the vendor's reason when a report fails
    interval_seconds: float = Field(5.0, gt=0)
    timeout_seconds: float = Field(1800.0, gt=0)


class EndpointTable(_Model):
    """How an endpoint's raw objects become rows of an Iceberg table (see `apilake.tables`)."""

    name: str | None = None  # default: the endpoint's name; files: a template over the file placeholders
    records: JmesPath | None = None  # where a JSON page's rows are (default: the paginator's records_path)
    format: Literal["json", "ndjson", "csv"] | None = None  # default: the endpoint's format for kind json, else by the key's extension
    primary_key: list[Annotated[str, Field(min_length=1)]] | None = Field(None, min_length=1)  # the table keeps one row per key: its latest version

    @field_validator("primary_key", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        """`primary_key: id` is short for `[id]`."""
        return [value] if isinstance(value, str) else value


class Tables(_Model):
    """The curated zone: the landed data as Iceberg tables, rebuilt per date from the raw zone."""

    catalog: dict[str, Scalar] = {}  # pyiceberg catalog properties (`type`, `uri`, ...), passed through
    namespace: Name | None = None  # default: each source's name
    warehouse: str | None = None  # where data files go (default for a local lake: inside `_apilake/`)
    target_file_mb: int = Field(128, ge=1, le=4096, description="Parquet data files are rolled at about this size")


class Incremental(_Model):
    """Read "since the last time": a cursor kept across runs in the destination (`apilake.incremental`)."""

    cursor_path: JmesPath  # in each record, e.g. `updated_at`
    initial_value: int | float | str  # a number (epoch seconds, an id) or an ISO 8601 date-time: the cursor's kind
    lag: dt.timedelta = Field(dt.timedelta(0), description="look-back re-read before the cursor: PT1H, or seconds")
    param: str | None = Field(None, min_length=1)  # the query parameter that takes {cursor}
    end_param: str | None = Field(None, min_length=1)  # the query parameter that takes {cursor_end}
    records_path: JmesPath | None = None  # where a page's records are (default: the paginator's records_path, else the page)
    on_missing_cursor: Literal["fail", "skip", "include"] = "fail"

    @field_validator("initial_value", mode="before")
    @classmethod
    def _yaml_timestamp(cls, value: Any) -> Any:
        """YAML reads a bare `2026-01-01T00:00:00Z` as a date-time: kept as the text it was."""
        if isinstance(value, dt.datetime):
            return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, bool):
            raise ValueError("a cursor is a number or an ISO 8601 date-time, not a boolean")
        return value

    @field_validator("initial_value")
    @classmethod
    def _parses(cls, value: int | float | str) -> int | float | str:
        if isinstance(value, str):
            try:
                dt.datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(f"{value!r} is neither a number nor an ISO 8601 date-time (such as 2026-01-01T00:00:00Z)") from None
        return value

    @field_validator("lag")
    @classmethod
    def _not_negative(cls, lag: dt.timedelta) -> dt.timedelta:
        if lag < dt.timedelta(0):
            raise ValueError("a look-back is not negative")
        return lag


KINDS_WITH_KEY = ("json", "file")  # one object per unit (page 1 of it) at a rendered key
#: The endpoint keys that belong to some kinds only.
KIND_SETTINGS: dict[str, set[str]] = {
    "json": {"method", "body", "headers", "paginate", "empty", "format", "incremental"},
    "bulk": {"urls", "files", "include", "exclude", "checksum", "verify"},
    "file": {"checksum", "verify"},
    "report": {"create", "id_path", "poll", "urls", "files", "include", "exclude", "checksum", "verify"},
}


class Endpoint(_Model):
    name: Name
    kind: EndpointKind
    path: str | None = None
    method: Literal["GET", "POST"] = "GET"
    body: Any = None
    headers: Annotated[dict[str, str], AfterValidator(_header_values)] = {}  # json: sent with the source's, to its origin only
    params: dict[str, Scalar | list[Scalar]] = {}
    matrix: dict[Name, list[Scalar]] = {}
    paginate: Literal["none", "next_page", "page_index"] | Paging = "none"
    empty: Literal["retry", "ok"] = Field("retry", description="ok: a 204 or an empty 200 means no data")
    format: Literal["json", "ndjson"] = Field("json", description="ndjson: one JSON record a line, landed as answered")
    key: str | None = None
    lag: int = Field(0, ge=0, le=3650, description="days between the run date and the date requested")
    schedule: str | None = None
    for_each: ForEach | None = None
    # bulk and report only (checksum and verify: file too)
    urls: JmesPath = "data.urls"
    files: Literal["metrics", "dimensions", "all"] = "all"
    include: list[str] = []
    exclude: list[str] = []
    checksum: ChecksumName | None = Field(None, description="overrides the source's `checksum:` for these files")
    verify: VerifyMode | None = Field(None, description="overrides the source's `verify:` for these files")
    # report only
    create: ReportCreate | None = None
    id_path: JmesPath | None = None
    poll: ReportPoll | None = None
    table: Literal[False] | EndpointTable | None = None  # false: no table for this endpoint
    incremental: Incremental | None = None  # json only
    on_response: list[ResponseRule] = []  # tried before the source's rules

    @field_validator("matrix")
    @classmethod
    def _non_empty_axes(cls, matrix: dict[str, list[Scalar]]) -> dict[str, list[Scalar]]:
        for axis, values in matrix.items():
            if not values:
                raise ValueError(f"matrix variable {axis!r} has no values")
            if axis in ("date", "source", "endpoint") or axis in FILE_PLACEHOLDERS:
                raise ValueError(f"matrix variable {axis!r} clashes with a built-in placeholder")
        return matrix

    @model_validator(mode="after")
    def _kind_settings(self) -> Endpoint:
        specific = set().union(*KIND_SETTINGS.values())
        stray = sorted((specific - KIND_SETTINGS[self.kind]) & self.model_fields_set)
        if stray:
            first, *others = [kind for kind, keys in KIND_SETTINGS.items() if stray[0] in keys]
            also = f"or {', '.join(others)}; " if others else ""
            raise ValueError(f"{stray[0]}: applies to kind: {first} only ({also}this endpoint is kind: {self.kind})")
        if self.kind == "report":
            missing = [k for k in ("create", "id_path", "poll") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"{missing[0]}: required for kind: report (create, id_path, poll)")
            if self.path is not None:
                raise ValueError("path: a report has no path of its own (create.path and poll.path say where to go)")
        elif self.path is None:
            raise ValueError(f"path: required for kind: {self.kind}")
        if self.body is not None and self.method != "POST":
            raise ValueError("body: only a POST sends a body (add method: POST)")
        if self.incremental is not None:
            _check_cursor_used(self)
        if isinstance(self.table, EndpointTable) and self.table.primary_key and (self.kind != "json" or self.table.format == "csv"):
            raise ValueError(
                f"table.primary_key {self.table.primary_key!r}: keeps the latest version of each JSON record, so only a kind: json "
                f"endpoint whose rows are JSON records may have one (this one is kind: {self.kind}"
                f"{', table.format: csv' if self.table.format == 'csv' else ''}); remove it, or read the data from a JSON endpoint"
            )
        if self.for_each is not None and self.for_each.as_ in {*self.matrix, "date", "source", "endpoint", "report_id", *FILE_PLACEHOLDERS}:
            raise ValueError(f"for_each.as: {self.for_each.as_!r} clashes with a matrix variable or a built-in placeholder")
        return self

    @property
    def max_pages(self) -> int:
        return self.paginate.max_pages if isinstance(self.paginate, PagingStyle) else DEFAULT_MAX_PAGES

    @property
    def paginate_type(self) -> str:
        return self.paginate if isinstance(self.paginate, str) else self.paginate.type

    @field_validator("schedule")
    @classmethod
    def _cron(cls, expression: str | None) -> str | None:
        return _check_cron(expression)


class Source(_Model):
    name: Name
    base_url: Annotated[str, Field(pattern=r"^https?://[^/\s]+(/\S*)?$")]
    token: Annotated[str | None, AfterValidator(_authorization)] = None
    auth: Auth | None = None
    headers: Annotated[dict[str, str], AfterValidator(_header_values)] = {}
    requests_per_second: int | None = Field(None, ge=1)
    requests_per_minute: int | None = Field(None, ge=1)
    requests_per_day: int | None = Field(None, ge=1)
    quota_timezone: str = "UTC"  # the zone whose midnight starts the vendor's quota day
    concurrency: int = Field(4, ge=1, le=256)
    retry: Retry = Retry()
    on_response: list[ResponseRule] = []
    rate_limit_headers: RateLimitHeaders = RateLimitHeaders()
    timeouts: Timeouts = Timeouts()
    max_json_mb: float = Field(256, gt=0)
    max_redirects: int = Field(5, ge=0, le=50, description="redirects one request may follow; one more fails it")
    checksum: ChecksumName = Field("crc32c", description="what run records identify bulk files by")
    verify: VerifyMode = Field("gzip", description="gzip: inflate every .gz file to its end; length: Content-Length only")
    endpoints: list[Endpoint] = Field(min_length=1)

    @field_validator("quota_timezone")
    @classmethod
    def _quota_zone(cls, name: str) -> str:
        return _check_zone(name)

    @field_validator("endpoints")
    @classmethod
    def _unique_endpoints(cls, endpoints: list[Endpoint]) -> list[Endpoint]:
        _check_unique([e.name for e in endpoints], "endpoint")
        _check_fan_out(endpoints)
        return endpoints

    @model_validator(mode="after")
    def _one_auth(self) -> Source:
        if self.token is not None and self.auth is not None:
            raise ValueError("token: and auth: both given; `token: X` is short for `auth: {type: bearer, token: X}`")
        return self

    @model_validator(mode="after")
    def _waits_within_cap(self) -> Source:
        """A rule's fixed `retry_after` wait beyond `retry.max_retry_after` could never be waited."""
        cap = self.retry.max_retry_after
        places = [("", self.on_response), *((f"endpoints[{i}].", e.on_response) for i, e in enumerate(self.endpoints))]
        for where, rules in places:
            for n, rule in enumerate(rules):
                if isinstance(rule.after, (int, float)) and rule.after > cap:
                    raise ValueError(
                        f"{where}on_response[{n}].after: {rule.after:g} s is beyond retry.max_retry_after ({cap:g} s); raise max_retry_after or wait less"
                    )
        return self

    @property
    def credentials(self) -> BearerAuth | ApiKeyAuth | BasicAuth | OAuth2ClientCredentials | OAuth2RefreshToken | None:
        """The source's auth scheme, `token:` read as the bearer shorthand."""
        if self.token is not None:
            return BearerAuth(type="bearer", token=self.token)
        return self.auth

    def secrets(self) -> list[str]:
        """Values that must never reach a log, a record, a key or another origin.

        Headers count when their name says they carry a credential (Authorization, X-Api-Key,
        Cookie, ...): masking `Accept: json` everywhere would only garble logs. An OAuth2 access
        token is learnt at run time (`redact.learn`).
        """
        headers = [v for k, v in [*self.headers.items(), *(h for e in self.endpoints for h in e.headers.items())] if SECRET_NAME.search(k)]
        auth = self.credentials.secrets() if self.credentials else []
        return [s for s in [*auth, *headers] if s]


CURSOR_PLACEHOLDERS = ("cursor", "cursor_end")


def _check_cursor_used(endpoint: Endpoint) -> None:
    """An incremental endpoint sends its cursor somewhere (`param`, or `{cursor}` in its path,
    params or body), or every run would read everything again; and never names a placeholder twice."""
    spec = endpoint.incremental
    assert spec is not None
    texts = [endpoint.path or "", *map(str, endpoint.params.values()), *endpoint.headers.values(), *(t for _, t in body_strings(endpoint.body))]
    if spec.param is None and not any("{cursor}" in t for t in texts):
        raise ValueError("incremental: the cursor is sent nowhere; set incremental.param, or put {cursor} in the path, params, headers or body")
    for name in (spec.param, spec.end_param):
        if name is not None and name in endpoint.params:
            raise ValueError(f"incremental: {name!r} is also in params; say it in one place")


def _check_fan_out(endpoints: list[Endpoint]) -> None:
    """A `for_each` names a JSON endpoint of the same source, and parents never form a cycle."""
    by_name = {e.name: e for e in endpoints}
    for endpoint in endpoints:
        if endpoint.for_each is None:
            continue
        parent = by_name.get(endpoint.for_each.endpoint)
        if parent is None:
            raise ValueError(f"endpoint {endpoint.name!r}: for_each.endpoint: no endpoint {endpoint.for_each.endpoint!r} in this source")
        if parent.kind != "json":
            raise ValueError(f"endpoint {endpoint.name!r}: for_each.endpoint: {parent.name!r} is kind: {parent.kind}; a parent must be kind: json")
        chain = [endpoint.name]
        while parent is not None:
            if parent.name in chain:
                raise ValueError(f"for_each forms a cycle: {' -> '.join([*chain, parent.name])}")
            chain.append(parent.name)
            parent = by_name[parent.for_each.endpoint] if parent.for_each else None


def parents(source: Source, endpoint: Endpoint) -> list[Endpoint]:
    """The chain of `for_each` parents of an endpoint, nearest first."""
    by_name = {e.name: e for e in source.endpoints}
    found = []
    while endpoint.for_each is not None:
        endpoint = by_name[endpoint.for_each.endpoint]
        found.append(endpoint)
    return found


class S3Options(_Model):
    """Options for `s3://` destinations; credentials come from the standard AWS chain only."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: Literal["auto", "virtual", "path"] = "auto"
    part_size_mb: int = Field(8, ge=5, le=5120)
    parts_in_flight: int = Field(2, ge=1, le=16)
    part_memory_mb: int = Field(40, ge=5, le=65536, description="part buffers of all transfers together")
    stale_upload_minutes: float = Field(120.0, ge=0, description="open multipart uploads under the job's keys begun longer ago are aborted")
    verify_tls: bool = True


class Notify(_Model):
    """Where to say that a run failed, or that the next run recovered: Apprise URLs (secrets themselves)."""

    urls: list[str] = Field(min_length=1)
    on: list[Literal["failure", "recovery"]] = ["failure", "recovery"]

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, raw: Any) -> Any:
        """YAML 1.1 reads a bare `on:` key as the boolean true."""
        if isinstance(raw, dict) and True in raw:
            raw = {("on" if k is True else k): v for k, v in raw.items()}
        return raw


class LeaseOptions(_Model):
    """The lease a run holds on an S3 destination: renewed every `renew_seconds`; a holder silent
    for `expiry_seconds` is taken to be dead and its lease may be taken over. `off` is for stores
    without conditional writes: only the host's OS lock keeps runs apart (see `apilake.lease`)."""

    mode: Literal["auto", "always", "off"] = "auto"  # auto: S3 and folders on network file systems
    expiry_seconds: float = Field(60.0, ge=1)
    renew_seconds: float = Field(15.0, gt=0)

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, mode: Any) -> Any:
        """YAML 1.1 reads a bare `off` as the boolean false."""
        return "off" if mode is False else mode

    @model_validator(mode="after")
    def _renew_within_expiry(self) -> LeaseOptions:
        if self.renew_seconds * 2 > self.expiry_seconds:
            raise ValueError("renew_seconds: renew at least twice per expiry_seconds, or one slow renewal loses the lease")
        return self


class Job(_Model):
    timezone: str = "UTC"
    destination: str = "./lake"
    concurrency: int = Field(16, ge=1, le=1024, description="cap on transfers in flight across all sources")
    schedule: str | None = None
    catch_up: int = Field(1, ge=0, description="missed scheduled runs to make up after downtime")
    executor: Literal["local", "dask"] = "local"
    scheduler_address: str | None = None
    s3: S3Options = S3Options()
    notify: Notify | None = None
    lease: LeaseOptions = LeaseOptions()
    quota_ledger: str | None = None  # where requests_per_day is counted (default: the destination)
    token_store: str | None = None  # where rotated OAuth2 refresh tokens are kept (default: the destination)
    tables: Tables | None = None
    sources: list[Source] = Field(min_length=1)
    _env_secrets: tuple[str, ...] = PrivateAttr(default=())

    @field_validator("timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        return _check_zone(name)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, expression: str | None) -> str | None:
        return _check_cron(expression)

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, sources: list[Source]) -> list[Source]:
        _check_unique([s.name for s in sources], "source")
        return sources

    @model_validator(mode="after")
    def _stale_uploads_outlive_transfers(self) -> Job:
        """The start-of-run sweep aborts open uploads older than `s3.stale_upload_minutes`: only
        safe while no live transfer can be that old."""
        if self.destination.startswith("s3://"):
            for si, source in enumerate(self.sources):
                if source.timeouts.total >= self.s3.stale_upload_minutes * 60:
                    raise ValueError(
                        f"s3.stale_upload_minutes ({self.s3.stale_upload_minutes:g}) must be longer than sources[{si}].timeouts.total "
                        f"({source.timeouts.total:g} s): a run would abort uploads a live transfer is still sending"
                    )
        return self

    @model_validator(mode="after")
    def _templates(self) -> Job:
        for si, source in enumerate(self.sources):
            for ei, endpoint in enumerate(source.endpoints):
                where = f"sources[{si}].endpoints[{ei}]"
                names = {"date", "source", "endpoint", *endpoint.matrix, *(CURSOR_PLACEHOLDERS if endpoint.incremental else ())}
                if endpoint.for_each is not None:
                    names.add(endpoint.for_each.as_)
                fields = [("path", endpoint.path or "", names), *_request_fields("", endpoint.params, endpoint.body, names)]
                fields += [(f"headers.{k}", v, names) for k, v in endpoint.headers.items()]
                if endpoint.create is not None and endpoint.poll is not None:
                    fields.append(("create.path", endpoint.create.path, names))
                    fields += _request_fields("create.", endpoint.create.params, endpoint.create.body, names)
                    fields.append(("poll.path", endpoint.poll.path, names | {"report_id"}))
                    fields += _request_fields("poll.", endpoint.poll.params, None, names | {"report_id"})
                if endpoint.key is not None:
                    by_file = endpoint.kind in ("bulk", "report")
                    fields.append(("key", endpoint.key, names | FILE_PLACEHOLDERS if by_file else names))
                if isinstance(endpoint.table, EndpointTable) and self.tables is None:
                    raise ValueError(f"{where}.table: a table needs the top-level `tables:` block (`tables: {{}}` for the defaults)")
                if isinstance(endpoint.table, EndpointTable) and endpoint.table.name is not None:
                    file_names = FILE_PLACEHOLDERS if endpoint.kind in ("bulk", "report") else set()
                    fields.append(("table.name", endpoint.table.name, (names - {"date"}) | file_names))
                for field, template, known in fields:
                    try:
                        check(template, known, dates={"date", "file_date"})
                    except TemplateError as exc:
                        raise ValueError(f"{where}.{field}: {exc}") from None
        return self

    def secrets(self) -> list[str]:
        """Credentials (tokens, passwords, keys, secret headers), notification URLs, and the values of
        `${VAR}`s that fill a credential setting or, named as one, a part of a request (`secret_use`)."""
        found = [secret for source in self.sources for secret in source.secrets()] + list(self._env_secrets)
        found += self.notify.urls if self.notify else []  # an Apprise URL carries its service's credentials
        if self.tables is not None:  # a catalog's credentials (`token`, `credential`, `s3.secret-access-key`), as written
            found += [str(v) for k, v in self.tables.catalog.items() if SECRET_NAME.search(k) and not str(k).endswith("-id")]
        return list(dict.fromkeys(found))


def _request_fields(prefix: str, params: dict[str, Any], body: Any, names: set[str]) -> list[tuple[str, str, set[str]]]:
    """(key path, template, known names) of every templated string in a request's params and body."""
    fields = [(f"{prefix}params.{k}", str(v), names) for k, v in params.items()]
    return fields + [(f"{prefix}body{where}", text, names) for where, text in body_strings(body)]


def body_strings(body: Any, where: str = "") -> list[tuple[str, str]]:
    """Every string in a JSON body with its path (`.filter.from`, `[0]`): each is a template."""
    if isinstance(body, dict):
        return [found for k, v in body.items() for found in body_strings(v, f"{where}.{k}")]
    if isinstance(body, list):
        return [found for i, v in enumerate(body) for found in body_strings(v, f"{where}[{i}]")]
    return [(where, body)] if isinstance(body, str) else []


def _check_zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Asia/Seoul or UTC)") from None
    return name


def _check_unique(names: list[str], what: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"two {what}s are named {name!r}; names must be unique")
        seen.add(name)


def _check_cron(expression: str | None) -> str | None:
    if expression is None:
        return None
    from croniter import croniter

    if not croniter.is_valid(expression):
        raise ValueError(f"{expression!r} is not a cron expression (five fields: minute hour day month weekday)")
    return expression


# ---------------------------------------------------------------------------------------------
# loading

#: libyaml's safe loader where PyYAML was built with it: ten times faster on a job file with a
#: 10,000-entry matrix than the pure-Python one, which is the fallback.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Nodes that YAML aliases may add to a job file: merge keys (`<<: *defaults`) and shared lists
#: stay far below it; an alias bomb (nine levels of nine aliases: 387 million nodes) does not.
MAX_ALIAS_NODES = 100_000

#: Where a credential goes: what commands that never call the source may leave unset.
_CREDENTIAL_PLACE = re.compile(r"^(sources\[\d+\]\.(token|auth|headers)|notify)(\.|\[|$)")

_ENV_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|\$\$")


def load_job(
    path: str | Path,
    *,
    profile: str | None = None,
    environ: dict[str, str] | None = None,
    offline: bool = False,
) -> Job:
    """Read, overlay, substitute and validate a job file; every failure is a `JobFileError`.

    `offline` is for commands that never call the source (status, cron, dry runs): an unset
    `${VAR}` in a credential then stays as written instead of being an error, so no token is
    needed to plan.
    """
    path = Path(path)
    environ = dict(os.environ if environ is None else environ)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobFileError(f"{path}: no such job file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JobFileError(f"{path}: cannot read the job file: {exc}") from None
    try:
        raw = _parse_yaml(text, path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise JobFileError(f"{path}:{where}: not valid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise JobFileError(f"{path}: a job file is a YAML mapping with at least a `sources:` list")
    raw = apply_profile(raw, profile or environ.get("APILAKE_PROFILE"), path)
    used: list[tuple[str, str, str | None]] = []
    raw = substitute_env(raw, environ, path, used=used, offline=offline)
    try:
        job = Job.model_validate(raw)
    except ValidationError as exc:
        raise JobFileError(format_validation_error(path, exc)) from None
    secret = [(name, value) for where, name, value in used if secret_use(where, name)]
    job._env_secrets = tuple(dict.fromkeys(value for _, value in secret if value))
    refuse_secrets_in_names(job, path, {name for name, _ in secret})
    return job


def _parse_yaml(text: str, path: Path) -> Any:
    """The YAML document, refused before it is built when its aliases would expand past
    `MAX_ALIAS_NODES`: a billion-laughs file is a few lines, but every later step (`${VAR}`
    substitution, validation) walks the expanded tree."""
    loader = _YAML_LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            added = alias_nodes(node)
        except ValueError as exc:
            raise JobFileError(f"{path}: {exc}; write the setting out instead") from None
        if added > MAX_ALIAS_NODES:
            raise JobFileError(
                f"{path}: YAML aliases (*name) would add {added:,} nodes to this file, past the limit of {MAX_ALIAS_NODES:,} "
                "(an alias bomb?); write repeated settings out, or nest aliases less deeply"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def alias_nodes(root: yaml.Node) -> int:
    """How many nodes aliases add to a composed YAML graph: an alias shares the node it names, so
    the graph stays small while the tree built from it need not. Walked without recursion, as a
    job file may nest deeply; an alias inside its own anchor is a `ValueError`."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, closing = stack.pop()
        if closing:
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in _children(node))
            open_.discard(id(node))
        elif id(node) in open_:
            raise ValueError("a YAML alias refers to a node that contains it (a recursive anchor)")
        elif id(node) not in sizes:
            open_.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))
    return sizes[id(root)] - len(sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def secret_use(where: str, name: str) -> bool:
    """Whether the `${name}` at key path `where` is a secret: by the setting it fills (a token, a
    password, a client secret, an API key's value, a credential header, a notification URL, a
    table catalog's credential), or
    by its name where a credential may ride inside a request. Elsewhere (`token_url`, `client_id`,
    `destination`, ...) a name such as `AUTH_URL` says nothing: the value is no credential."""
    if CREDENTIAL_SETTING.match(where):
        return True
    header = re.match(r"^sources\[\d+\]\.headers\.(.*)$", where)
    if header and SECRET_NAME.search(header.group(1)):
        return True
    catalog = re.match(r"^tables\.catalog\.(.*)$", where)  # a catalog's keys and passwords (`uri: …:${PGPASSWORD}@…`)
    if catalog:
        return bool(SECRET_NAME.search(catalog.group(1)) or SECRET_NAME.search(name))
    return bool(REQUEST_PART.match(where) and SECRET_NAME.search(name))


def refuse_secrets_in_names(job: Job, path: Path, variables: set[str]) -> None:
    """A secret in a key template or a matrix value would be written in clear where names are
    kept (object keys, run records, the dashboard), while logs and dry runs mask it, so nobody
    would notice: refused, naming the key. A secret variable is found by its value, and by its
    `${NAME}` when it is unset (dry runs and `status` load without it)."""
    redact = Redactor(job.secrets())
    named = re.compile(r"\$\{(?:" + "|".join(map(re.escape, sorted(variables))) + r")[:}]") if variables else None
    for si, source in enumerate(job.sources):
        for ei, endpoint in enumerate(source.endpoints):
            names = [("key", endpoint.key)] if endpoint.key is not None else []
            names += [(f"matrix.{axis}[{i}]", str(v)) for axis, values in endpoint.matrix.items() for i, v in enumerate(values)]
            for field, text in names:
                if redact.finds(text) or (named is not None and named.search(text)):
                    raise JobFileError(
                        f"{path}: sources[{si}].endpoints[{ei}].{field}: holds a secret (a credential's value); keys and "
                        "matrix values are written in clear into object keys, run records and the dashboard. Take it out: "
                        "credentials belong in token:, auth: or headers:"
                    )


def apply_profile(raw: dict[str, Any], profile: str | None, path: Path) -> dict[str, Any]:
    """Overlay `profiles.<name>` on the job; `sources` in a profile are keyed by source name."""
    profiles = raw.pop("profiles", None) or {}
    if not isinstance(profiles, dict):
        raise JobFileError(f"{path}: profiles: expected a mapping of profile name to settings")
    if profile is None:
        return raw
    if profile not in profiles:
        known = ", ".join(sorted(profiles)) or "none defined"
        raise JobFileError(f"{path}: profiles: no profile named {profile!r} (known: {known})")
    overlay = profiles[profile] or {}
    if not isinstance(overlay, dict):
        raise JobFileError(f"{path}: profiles.{profile}: expected a mapping of settings")
    merged = dict(raw)
    for key, value in overlay.items():
        if key == "sources":
            merged["sources"] = _overlay_sources(raw.get("sources"), value, path, profile)
        elif isinstance(value, dict) and isinstance(raw.get(key), dict):
            merged[key] = {**raw[key], **value}
        else:
            merged[key] = value
    return merged


def _overlay_sources(sources: Any, overlay: Any, path: Path, profile: str) -> Any:
    if not isinstance(overlay, dict) or not isinstance(sources, list):
        raise JobFileError(f"{path}: profiles.{profile}.sources: expected a mapping of source name to settings")
    names = [s.get("name") for s in sources if isinstance(s, dict)]
    for name, settings in overlay.items():
        if name not in names:
            raise JobFileError(f"{path}: profiles.{profile}.sources.{name}: no source named {name!r} in the job")
        if not isinstance(settings, dict):
            raise JobFileError(f"{path}: profiles.{profile}.sources.{name}: expected a mapping of settings")
    return [{**source, **overlay[source["name"]]} if isinstance(source, dict) and source.get("name") in overlay else source for source in sources]


def substitute_env(node: Any, environ: dict[str, str], path: Path, where: str = "", *, used: list[tuple[str, str, str | None]], offline: bool = False) -> Any:
    """Replace `${VAR}` (and `${VAR:-default}`) in every string; `$$` is a literal `$`.

    `used` collects (key path, name, value) of each variable read (value None: unset, offline), so
    the values of those that fill a credential can be redacted. `offline` leaves an unset variable
    as written where a credential goes (`_CREDENTIAL_PLACE`): elsewhere it would shape a path, key
    or setting the offline command uses.
    """
    if isinstance(node, dict):
        return {k: substitute_env(v, environ, path, _join(where, str(k)), used=used, offline=offline) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute_env(v, environ, path, f"{where}[{i}]", used=used, offline=offline) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group("name"), match.group("default")
        if name in environ:
            used.append((where, name, environ[name]))
            return environ[name]
        if default is not None:
            used.append((where, name, default))
            return default
        if offline and _CREDENTIAL_PLACE.match(where):
            used.append((where, name, None))
            return match.group(0)
        also = "; status, dashboard and --dry-run do without credentials only" if offline else ""
        raise JobFileError(f"{path}: {where}: environment variable {name} is not set (export it, or write ${{{name}:-default}}){also}")

    return _ENV_VAR.sub(replace, node)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


_UNION_BRANCH = re.compile(r"^(literal|tagged-union|function-after)\[")


def _meant(errors: list[Any]) -> list[Any]:
    """Of a key that is a name or a mapping (`paginate: cursor` or `paginate: {type: ...}`), only
    the errors of the form the user wrote: a mapping is not a misspelt name, nor the reverse."""

    def branch(error: Any) -> str | None:
        found = [p for p in error["loc"] if isinstance(p, str) and _UNION_BRANCH.match(p)]
        return found[0].split("[", 1)[0] if found else None

    def kept(error: Any) -> bool:
        kind, written = branch(error), error.get("input")
        if kind == "literal":
            return not isinstance(written, dict)
        return kind is None or error["type"] not in ("model_attributes_type", "dict_type", "model_type")

    return [e for e in errors if kept(e)] or errors


def format_validation_error(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: the job file is not valid:"]
    for error in _meant(exc.errors()):
        where = ""
        for part in error["loc"]:
            if isinstance(part, str) and _UNION_BRANCH.match(part):
                continue  # `paginate.tagged-union[...]`: pydantic's name of a branch, not a key
            where += f"[{part}]" if isinstance(part, int) else _join(where, str(part))[len(where) :]
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (a typo? see docs/job-file.md)"
        elif error["type"] == "literal_error":
            message = f"got {error['input']!r}; {message.lower()}"
        lines.append(f"  {where or '(top level)'}: {message}")
    return "\n".join(lines)
