"""Keeping secrets out of every text apilake writes: logs, error messages, run records, keys."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET_LENGTH = 3
SENSITIVE_QUERY = re.compile(
    r"(?i)(?P<name>[?&](?:[\w.-]*(?:signature|token|secret|password|passwd|credential|api[_-]?key|apikey|auth)[\w.-]*|key|sig))=(?P<value>[^&#\s\"']*)"
)


#: Secrets learnt at run time (an OAuth2 access token): every redactor in the process masks them.
_learnt: set[str] = set()


def _forms(secrets: Iterable[str]) -> set[str]:
    forms = set()
    for secret in secrets:
        if len(secret) >= MIN_SECRET_LENGTH:
            forms.update({secret, quote(secret, safe=""), quote_plus(secret)})
    return forms


def learn(secret: str) -> None:
    """Treat a value fetched at run time as a secret from now on, in every log line and record."""
    _learnt.update(_forms([secret]))


class Redactor:
    """Replaces known secret values (and their URL-encoded forms) and sensitive query values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._own = _forms(secrets)
        self._learnt_seen = -1
        self._secrets: list[str] = []

    def __call__(self, text: str) -> str:
        if self._learnt_seen != len(_learnt):  # longest first, so a secret inside another is masked whole
            self._learnt_seen = len(_learnt)
            self._secrets = sorted(self._own | _learnt, key=len, reverse=True)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return SENSITIVE_QUERY.sub(lambda m: f"{m.group('name')}={MASK}", text)
