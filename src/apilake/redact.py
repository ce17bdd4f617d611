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


class Redactor:
    """Replaces known secret values (and their URL-encoded forms) and sensitive query values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms = set()
        for secret in secrets:
            if len(secret) >= MIN_SECRET_LENGTH:
                forms.update({secret, quote(secret, safe=""), quote_plus(secret)})
        self._secrets = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return SENSITIVE_QUERY.sub(lambda m: f"{m.group('name')}={MASK}", text)
