"""More of Acme's answers: totals told up front, NDJSON, and raw bytes of any Content-Type.

- ``/acme/items/counted?offset=&limit=``: offset paging over Acme's items (``data``), with the
  total in the body (``total``) or, with ``total_in=header``, in ``X-Total-Count``. ``claim=N``
  overstates (or understates) it; ``claim=null`` sends ``"total": null`` (no header).
- ``/acme/items/ndjson?offset=&limit=``: the same items as NDJSON, one compact record a line.
- ``/acme/bytes/{name}``: ``{name}`` bytes when it is a number (at most 1 MiB), else 1,000;
  deterministic, with ``Content-Type: {type}`` (``type=none``: no Content-Type at all).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["Answer", "bytes_of", "ndjson_page", "shaped"]

MAX_BYTES = 1 << 20
Answer = tuple[int, bytes, list[tuple[str, str]]]  # status, body, headers


def shaped(parts: list[str], params: dict[str, str], items: list[dict[str, Any]]) -> Answer | None:
    """The answer to one of these paths (`parts` after ``/acme/``), or None for any other path."""
    offset, limit = int(params.get("offset", "0")), int(params.get("limit", "10"))
    if parts == ["items", "counted"]:
        return _counted(params, items[offset : offset + limit], len(items))
    if parts == ["items", "ndjson"]:
        return 200, ndjson_page(items, offset, limit), [("Content-Type", "application/x-ndjson")]
    if len(parts) == 2 and parts[0] == "bytes":
        kind = params.get("type", "application/octet-stream")
        if any(ord(c) < 32 or ord(c) == 127 for c in kind):
            return 400, b'{"error":"a header holds no control characters"}', [("Content-Type", "application/json")]
        return 200, bytes_of(parts[1]), [] if kind == "none" else [("Content-Type", kind)]
    return None


def _counted(params: dict[str, str], chunk: list[dict[str, Any]], count: int) -> Answer:
    claim = params.get("claim")
    total = None if claim == "null" else int(claim) if claim else count
    json_type = ("Content-Type", "application/json")
    if params.get("total_in") == "header":
        return 200, _compact({"data": chunk}), [json_type, *([("X-Total-Count", str(total))] if total is not None else [])]
    return 200, _compact({"data": chunk, "total": total}), [json_type]


def _compact(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def ndjson_page(items: list[dict[str, Any]], offset: int, limit: int) -> bytes:
    """Items `offset` to `offset + limit` as NDJSON (what must land byte-exact)."""
    return b"".join(_compact(item) + b"\n" for item in items[offset : offset + limit])


def bytes_of(name: str) -> bytes:
    """The bytes `/acme/bytes/{name}` serves."""
    size = min(int(name), MAX_BYTES) if name.isdigit() else 1000
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]
