"""Injectable faults: what can go wrong between apilake and the vendor.

A :class:`Fault` matches requests by regex on path+query and origin, fires at
most ``times`` times (thread-safe countdown) and tells the server how to
misbehave. The server owns the mechanics; this module only decides *which*
fault applies to a request.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["BODY_KINDS", "FAULT_KINDS", "FILE_KINDS", "REPLACING_KINDS", "TRANSPORT_KINDS", "Fault", "pick_fault"]

#: kinds that replace the normal response entirely (no auth / routing happens)
REPLACING_KINDS = frozenset({"status", "body", "deep_json", "huge_json", "echo_secret"})
#: kinds that alter how the normal response is delivered
TRANSPORT_KINDS = frozenset({"cut", "reset_mid_body", "truncate_gzip", "gzip_encoding", "stall", "drip"})
FAULT_KINDS = REPLACING_KINDS | TRANSPORT_KINDS
#: kinds that only make sense on a response body: with origin "any" they skip the
#: bodiless 302 of /v2/bulk/data, so a ``name=...`` match hits the file download
BODY_KINDS = frozenset({"cut", "reset_mid_body", "truncate_gzip", "gzip_encoding", "drip"})
#: kinds about gzip objects: with origin "any" they apply to the files origin only
FILE_KINDS = frozenset({"truncate_gzip", "gzip_encoding"})

_DEFAULT_STATUS = {"status": 503, "echo_secret": 503}
_lock = threading.Lock()  # one lock for all countdowns: faults fire rarely, contention is nil


@dataclass
class Fault:
    """One injected misbehaviour.

    ``match`` is searched (``re.search``) in the request's path+query. On the
    files origin the object name is also offered as ``name=<name>``, so the same
    ``name=metrics/.*\\.1\\.csv\\.gz`` pattern can target the listing URL's
    redirect (API) and the object download (files). With ``origin="any"``,
    body-altering kinds skip the bodiless API redirect and ``truncate_gzip`` /
    ``gzip_encoding`` apply to the files origin only.

    ``status`` defaults per kind: 503 for ``status``/``echo_secret``, 200 for
    ``body``/``deep_json``/``huge_json``.
    """

    match: str
    kind: str
    times: int | None = None
    origin: str = "any"
    status: int | None = None
    retry_after: str | None = None
    seconds: float = 0
    body: bytes | None = None
    content_type: str = "application/json"
    depth: int = 10000
    size: int = 0
    chunk: int = 1024
    interval: float = 0.05
    fired: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if self.origin not in ("any", "api", "files", "auth"):
            raise ValueError(f"fault origin must be 'any', 'api', 'files' or 'auth', not {self.origin!r}")
        self._rx = re.compile(self.match)

    @property
    def effective_status(self) -> int:
        """The HTTP status this fault answers with."""
        return self.status if self.status is not None else _DEFAULT_STATUS.get(self.kind, 200)

    def matches(self, origin: str, target: str, extra: tuple[str, ...] = ()) -> bool:
        """Does this fault apply to a request (ignoring the remaining count)?"""
        if self.origin not in ("any", origin):
            return False
        if self.origin == "any" and origin == "api" and (self.kind in FILE_KINDS or (self.kind in BODY_KINDS and target.startswith("/v2/bulk/data"))):
            return False
        if self._rx.pattern != self.match:  # `match` was reassigned at runtime
            self._rx = re.compile(self.match)
        return any(self._rx.search(s) is not None for s in (target, *extra))

    def take(self) -> bool:
        """Consume one firing; False once ``times`` is exhausted."""
        with _lock:
            if self.times is not None:
                if self.times <= 0:
                    return False
                self.times -= 1
            self.fired += 1
            return True


def pick_fault(faults: Iterable[Fault], origin: str, target: str, extra: tuple[str, ...] = ()) -> Fault | None:
    """The first matching fault that still has firings left (consuming one), else None.

    ``extra`` are further strings the regex may match (e.g. ``name=<object name>``).
    """
    for f in list(faults):
        if f.matches(origin, target, extra) and f.take():
            return f
    return None
