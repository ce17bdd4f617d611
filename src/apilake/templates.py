"""Placeholder templates for paths, parameters and object keys, and key sanitising.

Pure functions: no I/O, no clock. A placeholder is `{name}`, optionally with a day offset for
dates and a strftime format::

    {date}              2026-11-25   (the unit's run date, ISO)
    {date-6}            2026-11-19   (six days earlier: a 7-day window is {date-6} .. {date})
    {date:%Y%m%d}       20261125
    {date+1:%Y/%m/%d}   2026/11/26
    {market}            a matrix variable, or any other value the caller provides

`{{` and `}}` stand for literal braces.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from apilake.errors import TemplateError
from apilake.keys import disarm_markers

Value = str | int | float | dt.date

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<offset>[+-]\d+)?(?::(?P<fmt>[^{}]*))?\}|[{}]")
MAX_KEY_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Placeholder:
    name: str
    offset: int | None
    fmt: str | None


def placeholders(template: str) -> list[Placeholder]:
    """The placeholders of a template, in order of appearance (for validation up front)."""
    found = []
    for part in _parts(template):
        if isinstance(part, str):
            continue
        name, offset, fmt = part
        if name is None:
            raise TemplateError(f"unbalanced brace in template {template!r} (write {{{{ or }}}} for a literal brace)")
        found.append(Placeholder(name, int(offset) if offset else None, fmt))
    return found


def check(template: str, names: Collection[str], dates: Collection[str]) -> None:
    """Refuse a template that names an unknown placeholder or formats a value that is not a date."""
    for placeholder in placeholders(template):
        if placeholder.name not in names:
            raise TemplateError(f"unknown placeholder {{{placeholder.name}}} (known here: {', '.join(sorted(names))})")
        if placeholder.name not in dates and (placeholder.offset is not None or placeholder.fmt is not None):
            raise TemplateError(f"{{{placeholder.name}}} is not a date: offsets and formats apply to {', '.join(sorted(dates))} only")


def render(
    template: str,
    values: Mapping[str, Value],
    *,
    escape_slashes: bool = False,
    paths: Collection[str] = (),
) -> str:
    """Fill a template's placeholders from `values`.

    With `escape_slashes`, a substituted string is escaped (`escape_value`), so a value can never
    add or remove a folder level of an object key, nor look like another value once encoded (the
    template's own slashes, and those of a date format, stay); the values named in `paths` are
    paths on purpose and keep theirs.
    """
    return "".join(_fill(part, template, values, escape_slashes, paths) for part in _parts(template))


def render_head(template: str, values: Mapping[str, Value], *, escape_slashes: bool = False) -> str:
    """The template rendered up to its first placeholder that `values` lacks: what every key
    rendered from it starts with, whatever the other values are (a key prefix)."""
    head = []
    for part in _parts(template):
        if not isinstance(part, str) and part[0] not in values:
            break
        head.append(_fill(part, template, values, escape_slashes, ()))
    return "".join(head)


def _fill(
    part: str | tuple[str | None, str | None, str | None], template: str, values: Mapping[str, Value], escape_slashes: bool, paths: Collection[str]
) -> str:
    """One part of a template (literal text, or a placeholder) as rendered text."""
    if isinstance(part, str):
        return part
    name, offset, fmt = part
    if name is None:
        raise TemplateError(f"unbalanced brace in template {template!r} (write {{{{ or }}}} for a literal brace)")
    if name not in values:
        known = ", ".join(sorted(values)) or "none"
        raise TemplateError(f"unknown placeholder {{{name}}} in {template!r} (known here: {known})")
    value = values[name]
    if isinstance(value, dt.date):
        if offset:
            value = value + dt.timedelta(days=int(offset))
        return value.strftime(fmt) if fmt else value.isoformat()
    if offset or fmt:
        raise TemplateError(f"{{{name}}} in {template!r} is not a date: offsets and formats apply to dates only")
    text = str(value)
    return escape_value(text) if escape_slashes and name not in paths else text


def escape_value(text: str) -> str:
    """A value as part of one key segment: `%` and `/` encoded, and a value of dots only (`.`,
    `..`) as `%2E`s, so that it can be neither a dot segment nor the encoding of another value."""
    return _undot(text.replace("%", "%25").replace("/", "%2F"))


def quote_segment(text: str) -> str:
    """A value as part of one URL path segment: percent-encoded, dot-only values too (`..` →
    `%2E%2E`), which `quote` leaves as they are, and a client or server would then resolve
    (`/json/..` is `GET /`)."""
    return _undot(quote(text, safe=""))


def _undot(text: str) -> str:
    return text.replace(".", "%2E") if text and text.strip(".") == "" else text


@functools.lru_cache(maxsize=1024)
def _parts(template: str) -> tuple[str | tuple[str | None, str | None, str | None], ...]:
    """A template cut into literal text and placeholders (name, offset, format), once per
    template: a plan renders the same few templates for every unit. An unbalanced brace is a
    placeholder without a name, an error only when `render` reaches it."""
    parts: list[str | tuple[str | None, str | None, str | None]] = []
    end = 0
    for match in _PLACEHOLDER.finditer(template):
        if match.start() > end:
            parts.append(template[end : match.start()])
        text = match.group(0)
        parts.append(text[0] if text in ("{{", "}}") else (match.group("name"), match.group("offset"), match.group("fmt")))
        end = match.end()
    if end < len(template):
        parts.append(template[end:])
    return tuple(parts)


_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def sanitize_key(key: str) -> str:
    """Make a rendered key safe for any destination, or refuse it.

    Drops empty segments and a leading `/`, percent-encodes control characters, backslashes,
    `.`/`..` segments and the dot of a name apilake keeps for its own files (`disarm_markers`), so
    no key can climb out of the destination, hide a character in a log, or pass for a temporary file.
    """
    key = disarm_markers(_UNSAFE_CHARS.sub(lambda m: quote(m.group(0), safe=""), key))  # once for the key, not per segment
    segments = []
    for segment in key.split("/"):
        if segment in ("", "."):
            continue
        if set(segment) == {"."}:
            segment = segment.replace(".", "%2E")
        segments.append(segment)
    safe = "/".join(segments)
    if not safe:
        raise TemplateError(f"key template rendered to an empty key ({key!r})")
    if len(safe.encode()) > MAX_KEY_BYTES:
        raise TemplateError(f"key is longer than {MAX_KEY_BYTES} bytes: {safe[:80]}...")
    if safe.split("/", 1)[0].lower() == "_apilake":  # case-insensitive file systems too
        raise TemplateError(f"key {safe!r} would land inside apilake's own _apilake/ folder")
    return safe
