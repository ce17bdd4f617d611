"""Keeping secrets out of every text apilake writes: logs, error messages, run records, keys.

A secret is masked in every form a server may echo it in: as is; JSON-escaped (`\\/`, `\\"`,
`\\uXXXX`, in any mix); percent-encoded (upper- or lower-case hex, `+` for a space, in any mix);
and base64 (standard or URL-safe, padded or not, alone or inside a longer base64 text at any of
the 3 byte alignments; there the one or two characters that mix its bits with its neighbours'
stay, which tells nothing). Letters, digits and `-._~` are taken as written: no encoder escapes them.

Masking inside longer words is what garbles output (`basic_wrong` for a password `wrong`), and
only short secrets are at risk of it: a secret shorter than `WHOLE_WORDS_BELOW` characters is
masked only where it stands as a token of its own (not inside a longer word, nor inside a longer
base64 text). A short secret glued into a longer word is the price; it is a weak secret
already. Values shorter than `MIN_SECRET_LENGTH` are not masked at all: masking `ab` would
garble every message and hide nothing worth hiding.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import string
from collections.abc import Iterable, Iterator
from urllib.parse import quote, quote_plus

MASK = "***"
ERROR_DETAIL_CHARS = 300  # of a server's error text quoted in a message
MIN_SECRET_LENGTH = 3
WHOLE_WORDS_BELOW = 8  # shorter secrets are masked only as whole tokens
SENSITIVE_QUERY = re.compile(
    r"(?i)(?P<name>[?&](?:[\w.-]*(?:signature|token|secret|password|passwd|credential|api[_-]?key|apikey|auth)[\w.-]*|key|sig))=(?P<value>[^&#\s\"']*)"
)
URL_PASSWORD = re.compile(r"(?i)(?P<head>\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)(?P<password>[^/\s@]+)@")  # scheme://user:PASSWORD@host
_URLSAFE = str.maketrans("+/", "-_")
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")


LEARNT_KEPT = 64  # the latest secrets learnt at run time that stay masked (older ones expired)

#: Secrets learnt at run time (an OAuth2 access token), oldest first: every redactor in the
#: process masks them. Bounded: a scheduler or a Dask worker lives for weeks and fetches a token
#: every few minutes, and each kept secret costs a pattern per masked text; a token replaced
#: 64 times over has long expired, and an expired token grants nothing.
_learnt: dict[str, None] = {}
_learnt_generation = 0


def learn(secret: str) -> None:
    """Treat a value fetched at run time as a secret from now on, in every log line and record."""
    global _learnt_generation
    if len(secret) < MIN_SECRET_LENGTH or secret in _learnt:
        return
    _learnt[secret] = None
    while len(_learnt) > LEARNT_KEPT:
        del _learnt[next(iter(_learnt))]
    _learnt_generation += 1


def _echoes(c: str) -> list[str]:
    """One character of a secret as it may be echoed: itself, JSON-escaped, `\\uXXXX`, or
    percent-encoded (either case), longest first. Letters, digits and `-._~` are written as
    themselves by every encoder (RFC 3986's unreserved characters; JSON escapes none of them),
    which keeps the patterns of most secrets plain strings."""
    if c in _UNRESERVED:
        return [c]
    forms = {c, json.dumps(c)[1:-1], json.dumps(c, ensure_ascii=False)[1:-1]}
    units = c.encode("utf-16-be")
    escaped = "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))
    percent = "".join(f"%{b:02X}" for b in c.encode())
    forms |= {escaped, escaped.upper().replace("\\U", "\\u"), percent, percent.lower()}
    if c == "/":
        forms.add("\\/")
    if c == " ":
        forms.add("+")
    return sorted(forms, key=lambda f: (-len(f), f))


def _patterns(form: str, *, whole: bool) -> list[str]:
    """Patterns for `form` echoed with any of its characters escaped (`whole`: only as a token of
    its own), one per way its first character may be written: each starts with a literal, which
    lets the regex engine skip every position that cannot start a secret."""
    rest = "".join("(?:" + "|".join(map(re.escape, _echoes(c))) + ")" for c in form[1:])
    if whole and re.match(r"\w", form[-1]):
        rest += r"(?!\w)"
    before = whole and re.match(r"\w", form[0])
    return [re.escape(first) + (rf"(?<!\w[\s\S]{{{len(first)}}})" if before else "") + rest for first in _echoes(form[0])]


def _base64(secret: str, *, inside: bool) -> set[str]:
    """The secret base64-encoded, standard and URL-safe, padded and not; with `inside`, also the
    characters it owns wholly inside a longer base64 text at each of the 3 alignments."""
    raw = secret.encode()
    whole = base64.b64encode(raw).decode()
    forms = {whole, whole.rstrip("=")}
    if inside:
        for shift in (0, 1, 2):  # the secret starts `shift` bytes into a 3-byte group
            encoded = base64.b64encode(b"\0" * shift + raw).decode()
            forms.add(encoded[-(-8 * shift // 6) : 8 * (shift + len(raw)) // 6])  # characters of its bits only
    return forms | {f.translate(_URLSAFE) for f in forms}


@functools.lru_cache(maxsize=1024)
def _literal_forms(secret: str) -> frozenset[str]:
    """The usual whole encodings of a secret, for finding its first part where a text was cut."""
    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret)[1:-1].replace("/", "\\/"), *_base64(secret, inside=False)}
    for encoded in (quote(secret, safe=""), quote_plus(secret, safe="")):
        forms |= {encoded, re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded)}
    return frozenset(forms)


@functools.lru_cache(maxsize=1024)
def _masker(secret: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """The pattern of every echoed form of a secret (the longest form first), and the anchors: of
    each form, its longest run of characters no encoder escapes. A text holding none of them
    cannot hold the secret, which a substring search tells far faster than the pattern."""
    whole = len(secret) < WHOLE_WORDS_BELOW
    forms = sorted({secret, *_base64(secret, inside=not whole)}, key=lambda f: (-len(f), f))
    pattern = re.compile("|".join(p for form in forms for p in _patterns(form, whole=whole)))
    anchors = {max(re.findall(r"[A-Za-z0-9._~-]+", form), key=len, default="") for form in forms}
    return pattern, tuple(sorted(anchors))


class Redactor:
    """Masks known secrets (in their echoed forms, see the module), the password of a URL
    (`postgresql://user:***@host`) and sensitive query values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._own = {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}
        self._learnt_seen = -1
        self._secrets: list[str] = []

    def _current(self) -> list[str]:
        """Own and learnt secrets, the longest first, so a secret inside another is masked whole."""
        if self._learnt_seen != _learnt_generation:
            self._learnt_seen = _learnt_generation
            self._secrets = sorted(self._own | _learnt.keys(), key=lambda s: (-len(s), s))
        return self._secrets

    def _maskers(self, text: str) -> Iterator[re.Pattern[str]]:
        """The pattern of each secret that `text` may hold, the longest secret first."""
        for secret in self._current():
            pattern, anchors = _masker(secret)
            if any(anchor in text for anchor in anchors):
                yield pattern

    def __call__(self, text: str) -> str:
        for pattern in self._maskers(text):
            text = pattern.sub(MASK, text)
        text = URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", text)
        return SENSITIVE_QUERY.sub(lambda m: f"{m.group('name')}={MASK}", text)

    def finds(self, text: str) -> bool:
        """Whether `text` holds a secret (in any of its forms)."""
        return any(pattern.search(text) for pattern in self._maskers(text))

    def cut(self, text: str, limit: int, *, truncated: bool = False) -> str:
        """`text` masked whole, then cut to `limit` characters: cutting first would halve a secret
        that straddles the cut, and the masker would not know its first half. `truncated`: the text
        is only the start of something longer (a body read so far), so a secret's first part at its
        end is masked too. A text far longer than `limit` (a hostile body's error field) is first
        cut where no secret that starts before `limit` can still go on: at most 12 characters an
        echoed character (`\\uXXXX` twice, or 4 bytes percent-encoded)."""
        secrets = self._current()
        reach = limit + 12 * max(map(len, secrets), default=0)
        if len(text) > reach:
            text, truncated = text[:reach], True
        if truncated:
            text = self._mask_tail(text)
        return self(text)[:limit]

    def _mask_tail(self, text: str) -> str:
        forms = {form for secret in self._current() for form in _literal_forms(secret)}
        found = max(
            (n for form in forms for n in range(min(len(form) - 1, len(text)), MIN_SECRET_LENGTH - 1, -1) if text.endswith(form[:n])),
            default=0,
        )
        return text[:-found] + MASK if found else text
