"""What may go into a request header: checked in the job file, and again as each request goes out
(a value can arrive at run time: an OAuth2 access token)."""

from __future__ import annotations

import re

_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 5.1: a token
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # RFC 9110 5.5: no control character but HTAB


def header_problem(name: str, value: str) -> str | None:
    """Why a header cannot be sent as given (a CR or LF would end it and start another header
    of the value's choosing), or None. The message never holds the value: it may be a secret."""
    if not _NAME.match(name):
        return f"header name {name!r} is not an HTTP token (letters, digits and !#$%&'*+.^_`|~-)"
    if _BAD_VALUE.search(value):
        return f"header {name}: its value holds a control character (CR, LF, ...), which would end the header and start another"
    return None
