"""A second emulated vendor, "Acme", under `/acme/` on the API origin: the dialects of other APIs.

- Auth (``AcmeConfig.auth``, one scheme at a time): ``bearer`` (the emulator's token),
  ``api_key_header`` (``X-Api-Key``), ``api_key_query`` (``?api_key=``), ``basic``, or ``oauth2``:
  client credentials at ``POST /oauth/token`` on a third origin of its own (``Emulator.auth_url``),
  with short-lived tokens (``token_ttl``) that may also stop working after ``token_uses`` uses
  (a token revoked mid-run); the refresh token grant at the same endpoint, with single-use
  rotating refresh tokens (``emulator.refresh``).
- Pagination, one style per path, over ``items`` deterministic records:
  ``/acme/items/link`` (``links.next``, absolute then relative), ``/acme/items/header`` (RFC 8288
  ``Link``), ``/acme/items/cursor`` (``meta.next_cursor``), ``/acme/items/starting_after``
  (Stripe: ``data``, ``has_more``), ``/acme/items/offset`` (``data``, ``total``),
  ``/acme/items/pages`` (``data``, ``meta.pages``); faults: ``/acme/items/loop`` (a next link
  seen before) and ``/acme/items/cross`` (a next link to another origin).
- Fan-out: ``/acme/accounts`` → ``/acme/accounts/{id}/products`` → ``/acme/products/{id}/stats``.
- ``POST /acme/search`` with a JSON body (echoed with results).
- Reports: ``POST /acme/reports`` → ``report_id``; ``GET /acme/reports/{id}`` is ``pending`` for
  ``report_polls`` polls, then ``done`` with ``result.urls`` on the files origin, or ``failed``
  with a ``message`` for reports of type ``broken``.
- Raw files: ``/acme/export.csv`` and ``/acme/export.csv.gz``.
- Records that change between runs, read incrementally: GitHub, Stripe and Zendesk dialects
  under ``/acme/gh/``, ``/acme/stripe/``, ``/acme/zendesk/`` (see :mod:`.changes`).
- Feedback (`acme_feedback`): ``/acme/limited/items`` with rate-limit headers and a limit it
  enforces, ``/acme/feedback/{account}`` with errors in a 200's body.
- Totals up front, NDJSON and raw bytes of any Content-Type: see ``shapes``.
"""

from __future__ import annotations

import base64
import gzip
import hmac
import itertools
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from . import data
from .acme_answers import AcmeResponse, acme_items
from .acme_feedback import AcmeFeedback
from .changes import Changes
from .refresh import RefreshTokens
from .shapes import shaped

__all__ = ["Acme", "AcmeConfig", "AcmeResponse", "acme_items", "export_csv", "report_file_names"]


@dataclass
class AcmeConfig:
    auth: str = "oauth2"  # bearer | api_key_header | api_key_query | basic | oauth2
    api_key: str = "acme-key-5e4d3c2b1a"
    username: str = "acme-user"
    password: str = "acme-pass-0f1e2d3c"
    client_id: str = "acme-client"
    client_secret: str = "acme-secret-a1b2c3d4"
    token_ttl: float = 3600.0
    token_uses: int | None = None
    items: int = 23
    page_size: int = 10
    report_polls: int = 2
    report_files: int = 2


def export_csv(date: str) -> bytes:
    rows = [f"{date},{n},{data._h('export', date, n) % 10_000}" for n in range(50)]
    return ("date,row,value\n" + "\n".join(rows) + "\n").encode()


def report_file_names(report_type: str, start: str, end: str, files: int) -> list[str]:
    return [f"reports/{report_type}/{start}_{end}/part-{i}.csv.gz" for i in range(files)]


class Acme:
    """State of the Acme vendor: issued tokens and reports (thread-safe)."""

    def __init__(self) -> None:
        self.config = AcmeConfig()
        self._lock = threading.Lock()
        self._tokens: dict[str, list[float]] = {}  # token -> [expiry (monotonic), uses left]
        self._reports: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self.tokens_issued = 0
        self.reports_created = 0
        self.changes = Changes()
        self.feedback = AcmeFeedback()  # rate-limit headers and errors in a 200 (`acme_feedback`)
        self.refresh_tokens = RefreshTokens()  # the refresh token grant at the same token endpoint

    # -- the token endpoint (auth origin) ---------------------------------------------
    def token(self, method: str, headers: Any, body: bytes) -> AcmeResponse:
        cfg = self.config
        if method != "POST":
            return AcmeResponse.json(405, {"error": "invalid_request"})
        form = dict(parse_qsl(body.decode("latin-1")))
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = headers.get("Authorization") or ""
        if auth.lower().startswith("basic "):
            client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
        if form.get("grant_type") not in ("client_credentials", "refresh_token"):
            return AcmeResponse.json(400, {"error": "unsupported_grant_type"})
        if client_id != cfg.client_id or not hmac.compare_digest((client_secret or "").encode(), cfg.client_secret.encode()):
            return AcmeResponse.json(401, {"error": "invalid_client"})
        if form["grant_type"] == "refresh_token":
            return AcmeResponse.json(*self.refresh_tokens.refresh(form, self._issue))
        return AcmeResponse.json(200, self._issue(form.get("scope", "")))

    def _issue(self, scope: str) -> dict[str, Any]:
        """A new access token, as the token endpoint answers it (RFC 6749 section 5.1)."""
        cfg = self.config
        token = "acme-at-" + secrets.token_hex(12)
        with self._lock:
            self._tokens[token] = [time.monotonic() + cfg.token_ttl, cfg.token_uses if cfg.token_uses is not None else -1]
            self.tokens_issued += 1
        return {"access_token": token, "token_type": "Bearer", "expires_in": cfg.token_ttl, "scope": scope}

    def expire_access_tokens(self) -> None:
        """Every access token issued so far stops working (as if its hour were up)."""
        with self._lock:
            self._tokens.clear()

    # -- the API (api origin) ---------------------------------------------------------
    def _authorized(self, headers: Any, params: dict[str, str], bearer: str) -> bool:
        cfg = self.config
        auth = headers.get("Authorization") or ""
        if cfg.auth == "bearer":
            return hmac.compare_digest(auth.encode(), f"Bearer {bearer}".encode())
        if cfg.auth == "api_key_header":
            return hmac.compare_digest((headers.get("X-Api-Key") or "").encode(), cfg.api_key.encode())
        if cfg.auth == "api_key_query":
            return hmac.compare_digest(params.get("api_key", "").encode(), cfg.api_key.encode())
        if cfg.auth == "basic":
            expected = "Basic " + base64.b64encode(f"{cfg.username}:{cfg.password}".encode()).decode()
            return hmac.compare_digest(auth.encode(), expected.encode())
        token = auth[7:] if auth.startswith("Bearer ") else ""
        with self._lock:
            state = self._tokens.get(token)
            if state is None or time.monotonic() >= state[0] or state[1] == 0:
                return False
            if state[1] > 0:
                state[1] -= 1
            return True

    def handle(self, method: str, path: str, params: dict[str, str], headers: Any, body: bytes, api_url: str, files_url: str, bearer: str) -> AcmeResponse:
        if not self._authorized(headers, params, bearer):
            return AcmeResponse.json(401, {"error": "unauthorized"}, [("WWW-Authenticate", 'Bearer error="invalid_token"')])
        params = {k: v for k, v in params.items() if k != "api_key"}
        parts = path.strip("/").split("/")[1:]  # after "acme"
        changed = self.changes.handle(method, parts, params, body, api_url)
        if changed is not None:
            return AcmeResponse.json(*changed)
        if method == "POST":
            doc = json.loads(body or b"null")
            if parts == ["search"]:
                return AcmeResponse.json(200, {"query": doc, "results": [i for i in acme_items(self.config.items) if i["n"] % 5 == 0]})
            if parts == ["reports"]:
                return self._create_report(doc)
            return AcmeResponse.json(405, {"error": "method not allowed"})
        if parts == ["limited", "items"]:
            return self.feedback.limited(params, self.config.items, self.config.page_size)
        if len(parts) == 2 and parts[0] == "feedback":
            return self.feedback.feedback(parts[1], params)
        if (answer := shaped(parts, params, acme_items(self.config.items))) is not None:
            return AcmeResponse(*answer)
        if parts[:1] == ["items"] and len(parts) == 2:
            return self._items(parts[1], params, api_url, files_url)
        if parts == ["accounts"]:
            return AcmeResponse.json(200, {"date": params.get("date"), "accounts": [{"id": "a1"}, {"id": "a2"}, {"id": "a1"}]})
        if len(parts) == 3 and parts[0] == "accounts" and parts[2] == "products":
            return AcmeResponse.json(200, {"account": parts[1], "products": [{"id": f"{parts[1]}-p{i}"} for i in (1, 2)]})
        if len(parts) == 3 and parts[0] == "products" and parts[2] == "stats":
            return AcmeResponse.json(200, {"product": parts[1], "date": params.get("date"), "installs": data._h(parts[1]) % 500})
        if len(parts) == 2 and parts[0] == "reports":
            return self._poll_report(parts[1], files_url)
        if parts in (["export.csv"], ["export.csv.gz"]):
            raw = export_csv(params.get("date", ""))
            if parts[0].endswith(".gz"):
                return AcmeResponse(200, gzip.compress(raw, mtime=0), [("Content-Type", "application/gzip")])
            return AcmeResponse(200, raw, [("Content-Type", "text/csv")])
        return AcmeResponse.json(404, {"error": f"unknown endpoint {path}"})

    def _items(self, style: str, params: dict[str, str], api_url: str, files_url: str) -> AcmeResponse:
        items, size = acme_items(self.config.items), self.config.page_size
        pages = max(1, -(-len(items) // size))
        if style in ("link", "header", "loop", "cross", "pages"):
            page = int(params.get("page", "1"))
            chunk = items[(page - 1) * size : page * size]
            more = page < pages
            here = f"/acme/items/{style}"
            following = f"{here}?{urlencode({**params, 'page': page + 1})}"
            if style == "link":
                following = (api_url + following) if page == 1 else following  # absolute, then relative
                return AcmeResponse.json(200, {"data": chunk, "links": {"next": following if more else None}})
            if style == "header":
                links = [f'<{api_url}{following}>; rel="next"'] if more else []
                links.append(f'<{api_url}{here}?page={pages}>; rel="last"')
                return AcmeResponse.json(200, chunk, [("Link", ", ".join(links))])
            if style == "loop":
                return AcmeResponse.json(200, {"data": chunk, "links": {"next": f"{here}?page=2"}})
            if style == "cross":
                return AcmeResponse.json(200, {"data": chunk, "links": {"next": f"{files_url}{following}"}})
            return AcmeResponse.json(200, {"data": chunk, "meta": {"pages": pages}})
        if style == "cursor":
            start = int(params.get("cursor", "c0")[1:])
            chunk = items[start : start + size]
            nxt = f"c{start + size}" if start + size < len(items) else None
            return AcmeResponse.json(200, {"data": chunk, "meta": {"next_cursor": nxt}})
        if style == "starting_after":
            limit = int(params.get("limit", "10"))
            after = params.get("starting_after")
            start = next((i + 1 for i, it in enumerate(items) if it["id"] == after), 0) if after else 0
            chunk = items[start : start + limit]
            return AcmeResponse.json(200, {"object": "list", "data": chunk, "has_more": start + limit < len(items)})
        if style == "offset":
            offset, limit = int(params.get("offset", "0")), int(params.get("limit", "10"))
            return AcmeResponse.json(200, {"data": items[offset : offset + limit], "total": len(items)})
        return AcmeResponse.json(404, {"error": f"unknown style {style}"})

    def _create_report(self, doc: Any) -> AcmeResponse:
        if not isinstance(doc, dict) or not doc.get("type"):
            return AcmeResponse.json(400, {"error": "a report needs a type"})
        with self._lock:
            report_id = f"rep-{next(self._ids)}"
            self._reports[report_id] = {"request": doc, "polls": 0}
            self.reports_created += 1
        return AcmeResponse.json(201, {"report_id": report_id})

    def _poll_report(self, report_id: str, files_url: str) -> AcmeResponse:
        with self._lock:
            report = self._reports.get(report_id)
            if report is None:
                return AcmeResponse.json(404, {"error": f"no report {report_id}"})
            report["polls"] += 1
            polls = report["polls"]
        request = report["request"]
        if polls <= self.config.report_polls:
            return AcmeResponse.json(200, {"report_id": report_id, "status": "pending"})
        if request["type"] == "broken":
            return AcmeResponse.json(200, {"report_id": report_id, "status": "failed", "message": "the report engine ran out of memory"})
        names = report_file_names(request["type"], str(request.get("from")), str(request.get("to")), self.config.report_files)
        urls = [f"{files_url}/objects/{quote(n, safe='/')}?X-Amz-Signature={data.object_signature(n)}" for n in names]
        return AcmeResponse.json(200, {"report_id": report_id, "status": "done", "result": {"urls": urls}})
