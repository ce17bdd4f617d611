"""The Acme vendor's refresh token grant (RFC 6749 section 6) with single-use, rotating tokens.

``POST /oauth/token`` with ``grant_type=refresh_token`` on the auth origin: a live refresh token
is spent and answered with a new access token (which the Acme API accepts) and a new refresh
token. A spent, revoked or unknown one gets ``400 {"error": "invalid_grant"}`` (its description
echoes the token, as careless vendors do); a spent one
presented again also revokes its whole chain, as OAuth 2.1 advises against replay, so a client
that spends one token twice is caught. ``grant()`` stands for the user authorizing the app (a
new chain's first token), ``revoke()`` for the user withdrawing it; ``gate`` lets a test hold
refreshes in flight.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["RefreshTokens"]


class RefreshTokens:
    """Live and spent refresh tokens, by chain (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chains = itertools.count(1)
        self._live: dict[str, int] = {}  # token -> chain
        self._spent: dict[str, int] = {}
        self.issued: list[str] = []  # every refresh token handed out, the granted ones too
        self.access_tokens: list[str] = []  # every access token a refresh handed out
        self.refreshes = 0  # refresh requests answered with new tokens
        self.refused = 0  # answered invalid_grant
        self.reused = 0  # of which with a token spent before
        self.gate = threading.Event()  # refreshes wait while it is clear
        self.gate.set()

    def grant(self) -> str:
        """The first refresh token of a new chain, as the vendor's consent screen gives it."""
        with self._lock:
            return self._new(next(self._chains))

    def revoke(self) -> None:
        """The user withdraws the app's access: every live refresh token stops working."""
        with self._lock:
            self._live.clear()

    def refresh(self, form: dict[str, str], issue: Callable[[str], dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        """Spend the form's refresh token: (200, access token + new refresh token) or (400, invalid_grant).
        `issue(scope)` makes the access token part of the answer."""
        self.gate.wait(timeout=60)
        token = form.get("refresh_token", "")
        with self._lock:
            chain = self._live.pop(token, None)
            if chain is None:
                self.refused += 1
                replayed = self._spent.get(token)
                if replayed is not None:
                    self.reused += 1
                    self._live = {live: of for live, of in self._live.items() if of != replayed}
                # echoing the token, as a careless vendor does: clients must keep it out of their errors
                return 400, {"error": "invalid_grant", "error_description": f"refresh token {token} is invalid, expired, revoked or already used"}
            self._spent[token] = chain
            rotated = self._new(chain)
            self.refreshes += 1
        answer = issue(form.get("scope", ""))
        with self._lock:
            self.access_tokens.append(answer["access_token"])
        return 200, {**answer, "refresh_token": rotated}

    def _new(self, chain: int) -> str:
        token = "acme-rt-" + secrets.token_hex(12)
        self._live[token] = chain
        self.issued.append(token)
        return token
