"""Response rules (`on_response:`): what an answer means, in the user's words before apilake's.

Rules are tried in order, an endpoint's before its source's; the first whose every condition
holds decides. When none does, the built-in rules decide as they always have: a 2xx is an
answer, a transient status (408, 425, 428, 429, 5xx) is retried with back-off (its
`Retry-After` honoured), any other status fails the unit.

Non-2xx answers are judged on their status, headers and the start of their body (what the
client keeps of an error's body), a 2xx JSON answer on its whole body. A 2xx file is landed as
sent: its body is never read into memory for a rule.

Which rules apply is the unit's endpoint's business, not the request's: the unit's work runs
inside `applying(...)`, and the source's client asks `active()` for every answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from apilake.errors import TransferError, UnitIgnored
from apilake.fetch import dig
from apilake.fetch.ratelimit_headers import parse_retry_after
from apilake.jobfile import Endpoint, ResponseRule, Source
from apilake.redact import Redactor


@dataclass(frozen=True)
class Answer:
    """An answer as rules see it."""

    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    @cached_property
    def doc(self) -> Any:
        """The body as JSON, or None when it is not JSON (then no `body_path` matches)."""
        try:
            return json.loads(self.body) if self.body else None
        except (ValueError, RecursionError):
            return None


def matches(rule: ResponseRule, answer: Answer) -> bool:
    """Whether every condition of `rule` holds for `answer`."""
    if rule.statuses is not None and not any(low <= answer.status <= high for low, high in rule.statuses):
        return False
    if rule.header is not None:
        name, _, text = rule.header.partition(":")
        value = answer.headers.get(name.strip().lower())
        if value is None or text.strip() not in value:
            return False
    if rule.body_contains is not None and rule.body_contains.encode() not in answer.body:
        return False
    return rule.body_path is None or bool(dig(answer.doc, rule.body_path))


class Rules:
    """The rules of one endpoint: its own, then its source's, each with where it was written."""

    def __init__(self, rules: list[tuple[str, ResponseRule]]) -> None:
        self.rules = rules

    @classmethod
    def of(cls, source: Source, endpoint: Endpoint) -> Rules:
        own = [(f"endpoint {endpoint.name} on_response[{n}]", r) for n, r in enumerate(endpoint.on_response)]
        shared = [(f"source {source.name} on_response[{n}]", r) for n, r in enumerate(source.on_response)]
        return cls(own + shared)

    def judge(self, answer: Answer, what: str, redact: Redactor) -> None:
        """Raise what the first matching rule makes of `answer`; return when no rule matches
        (the built-in rules then decide). `what` is the answer's description so far: a
        non-2xx answer's redacted error message, or the unit and page of a 2xx."""
        for label, rule in self.rules:
            if matches(rule, answer):
                raise outcome(rule, label, answer, what, redact)

    def __bool__(self) -> bool:
        return bool(self.rules)


def outcome(rule: ResponseRule, label: str, answer: Answer, what: str, redact: Redactor) -> Exception:
    """The exception that carries `rule`'s action for `answer` to the retry policy and the unit."""
    if rule.action == "ignore":
        return UnitIgnored(redact(f"{what}: ignored, as {label} says"))
    if rule.action == "fail":
        said = f"{rule.message} " if rule.message else ""
        return TransferError(redact(f"{what}: {said}({label})"), status=answer.status)
    if rule.action == "retry":
        wait = parse_retry_after(answer.headers.get("retry-after"))
        return TransferError(redact(f"{what}: retried, as {label} says"), status=answer.status, transient=True, retry_after=wait)
    after = rule.after
    wait = float(after) if isinstance(after, (int, float)) else parse_retry_after(answer.headers.get((after or "Retry-After").lower()))
    return TransferError(redact(f"{what}: retried after the wait {label} names"), status=answer.status, transient=True, retry_after=wait)


_active: ContextVar[Rules | None] = ContextVar("apilake_response_rules", default=None)
_NONE = Rules([])


@contextmanager
def applying(rules: Rules) -> Iterator[None]:
    """Judge the answers of the work run inside this block (one unit) by `rules`."""
    token = _active.set(rules)
    try:
        yield
    finally:
        _active.reset(token)


def active() -> Rules:
    """The rules of the unit whose work is running (none outside a unit: the built-in ones decide)."""
    return _active.get() or _NONE
