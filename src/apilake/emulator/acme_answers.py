"""What the Acme vendor answers with, shared by its handlers (`acme`, `acme_feedback`): the
answer type and the items every list endpoint pages through."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from . import data


@dataclass
class AcmeResponse:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, obj: Any, headers: list[tuple[str, str]] | None = None) -> AcmeResponse:
        return cls(status, json.dumps(obj, separators=(",", ":")).encode(), [("Content-Type", "application/json"), *(headers or [])])


def acme_items(count: int) -> list[dict[str, Any]]:
    return [{"id": f"it{n:03d}", "n": n, "value": data._h("acme", n) % 1000} for n in range(count)]
