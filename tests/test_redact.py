"""The redactor: which forms of a secret it masks, and what it must leave alone."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

import pytest

from apilake.redact import MASK, Redactor

LONG = "tok/9f8e+7d6c=5b4a~é"
SHORT = "wrong"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "text, masked",
    [
        (f"Bearer {LONG}", "Bearer ***"),
        (json.dumps(LONG), '"***"'),  # \u00e9
        (json.dumps(LONG).replace("/", "\\/"), '"***"'),
        (json.dumps(LONG, ensure_ascii=False), '"***"'),
        ("".join(c if c.isascii() and (c.isalnum() or c in "-._~") else f"\\u{ord(c):04X}" for c in LONG), MASK),
        (quote(LONG, safe=""), MASK),
        (quote(LONG, safe="").lower(), MASK),
        (quote_plus(LONG), MASK),
        (b64(LONG.encode()), MASK),
        (b64(LONG.encode()).rstrip("="), MASK),
        (base64.urlsafe_b64encode(LONG.encode()).decode(), MASK),
        (f"x={LONG}&y=1", "x=***&y=1"),
        (f"password {SHORT}.", "password ***."),
        (f'"{SHORT}"', '"***"'),
        (f"pw={quote(SHORT)}&", "pw=***&"),
        (f"Basic {b64(SHORT.encode())}", "Basic ***"),
        ("unit basic_wrong failed", "unit basic_wrong failed"),  # a short secret inside a word stays
        ("wrongly", "wrongly"),
        ("ab", "ab"),
    ],
)
def test_forms_of_a_secret_are_masked(text: str, masked: str) -> None:
    assert Redactor([LONG, SHORT, "ab"])(text) == masked


@pytest.mark.parametrize("shift", [0, 1, 2])
def test_a_long_secret_inside_a_longer_base64_text_is_masked_at_every_alignment(shift: int) -> None:
    encoded = b64(b"\xfb" * shift + LONG.encode() + b"tail")
    masked = Redactor([LONG])(encoded)
    assert MASK in masked
    assert len(masked) - len(MASK) <= len(encoded) - 4 * len(LONG.encode()) // 3 + 2  # at most 2 mixed characters stay


@pytest.mark.parametrize(
    "text, limit, truncated, cut",
    [
        ("x" * 8 + LONG, 10, False, "x" * 8 + "**"),  # masked whole, then cut
        ("x" * 8 + LONG[:6], 100, True, "x" * 8 + MASK),  # a cut text ends in a secret's first part
        ("x" * 8 + quote(LONG, safe="")[:7], 100, True, "x" * 8 + MASK),
        ("x" * 8 + "to", 100, True, "x" * 8 + "to"),  # too little to mask
        ("x" * 8 + LONG[:6], 100, False, "x" * 8 + LONG[:6]),  # a whole text: a prefix is no secret
        ("x" * 8 + LONG + "y" * 10**6, 20, False, "x" * 8 + MASK + "y" * 9),  # a huge text is cut near the limit first
        ("x" * 8 + quote(LONG, safe="").lower() + "y" * 10**6, 20, False, "x" * 8 + MASK + "y" * 9),
    ],
)
def test_cut_masks_before_it_cuts(text: str, limit: int, truncated: bool, cut: str) -> None:
    assert Redactor([LONG]).cut(text, limit, truncated=truncated) == cut


def test_finds_a_secret_in_any_form() -> None:
    redact = Redactor([LONG])
    assert redact.finds(f"acct/{quote(LONG, safe='')}") and not redact.finds("acct/1")


def test_secrets_learnt_at_run_time_are_masked_and_kept_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long-lived process (the scheduler, a Dask worker) learns a token every few minutes: the
    latest stay masked, in redactors made before and after, and the oldest go, so masking a line
    does not grow slower with every token ever fetched."""
    from apilake import redact

    monkeypatch.setattr(redact, "_learnt", {})
    early = Redactor()
    tokens = [f"access-token-{i:05d}-xyz" for i in range(redact.LEARNT_KEPT * 3)]
    for token in tokens:
        redact.learn(token)
    late = Redactor()
    for mask in (early, late):
        assert mask(f"echo {tokens[-1]} and {tokens[-redact.LEARNT_KEPT]}") == "echo *** and ***"
    assert len(redact._learnt) == redact.LEARNT_KEPT
    assert tokens[0] not in redact._learnt


@pytest.mark.parametrize(
    "text, masked",
    [
        ("cannot reach postgresql+psycopg2://app:s3cr%2Ft@db:5432/x", "cannot reach postgresql+psycopg2://app:***@db:5432/x"),
        ("https://user:pw@host/path and https://host/no-password", "https://user:***@host/path and https://host/no-password"),
        ("https://host/path?x=a:b@c", "https://host/path?x=a:b@c"),  # no user-info: a query is not a password
    ],
)
def test_the_password_of_a_url_is_masked(text: str, masked: str) -> None:
    assert Redactor()(text) == masked
