"""Deterministic vendor data for the emulator.

Everything here is a pure function of its arguments (no clock, no randomness
that is not seeded), so tests can compute exactly what the emulator serves and
therefore exactly what must land in the lake.
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import hashlib
import hmac
import math
import random
import re
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CSV_HEADER",
    "ERROR_MESSAGES",
    "MARKETS",
    "ApiError",
    "bulk_file_names",
    "bundle_id",
    "dates_in_range",
    "expected_file_names",
    "expected_records",
    "file_bytes",
    "file_length",
    "file_sha256",
    "gunzip_members",
    "iter_file_chunks",
    "iter_file_range",
    "list_key",
    "member_boundaries",
    "name_signature",
    "object_signature",
    "page_body",
    "parse_date",
    "split_multi",
]

# --------------------------------------------------------------------------
# basics
# --------------------------------------------------------------------------

ERROR_MESSAGES: dict[int, str] = {
    400: "bad parameter",
    401: "invalid API key",
    403: "not in subscription",
    404: "not found",
    405: "method not allowed",
    428: "temporarily blacklisted",
    429: "rate limit exceeded",
    500: "internal server error",
    503: "service under maintenance",
}

MARKETS: frozenset[str] = frozenset({"ios", "google-play", "all-android", "amazon-appstore", "mac", "windows-store", "all"})

MAX_PAGE_SIZE = 100  # the vendor caps the `page_size` query parameter at 100


class ApiError(Exception):
    """A vendor error: HTTP status == body code, body ``{"code", "error"}``."""

    def __init__(self, status: int, message: str | None = None) -> None:
        self.status = status
        self.message = message or ERROR_MESSAGES.get(status, "error")
        super().__init__(f"{status}: {self.message}")

    def body(self) -> dict[str, Any]:
        """The JSON error envelope the vendor sends."""
        return {"code": self.status, "error": self.message}


def _h(*parts: object) -> int:
    """Stable 64-bit hash of the parts (Python's hash() is salted per process)."""
    raw = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "big")


def split_multi(value: str | Sequence[str] | None) -> list[str]:
    """Split a multi-valued parameter: ``US+FR`` (``+`` may arrive decoded as space) or ``US,FR``."""
    if value is None:
        return []
    if not isinstance(value, str):
        value = "+".join(value)
    return [v for v in re.split(r"[+,\s]+", value) if v]


def parse_date(value: str | None, field: str = "date") -> dt.date:
    """Parse a strict ``YYYY-MM-DD`` date or raise a 400 like the vendor."""
    if not value:
        raise ApiError(400, f"missing parameter: {field}")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ApiError(400, f"invalid {field}: {value!r} (expected YYYY-MM-DD)")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"invalid {field}: {value!r}") from None


@functools.lru_cache(maxsize=256)
def dates_in_range(start: dt.date, end: dt.date, granularity: str = "daily") -> tuple[dt.date, ...]:
    """Period start dates in [start, end] for daily / weekly / monthly granularity."""
    if end < start:
        raise ApiError(400, "end_date is before start_date")
    out: list[dt.date] = []
    if granularity == "daily":
        d = start
        while d <= end:
            out.append(d)
            d += dt.timedelta(days=1)
    elif granularity == "weekly":
        d = start
        while d <= end:
            out.append(d)
            d += dt.timedelta(days=7)
    elif granularity == "monthly":
        y, m = start.year, start.month
        while dt.date(y, m, 1) <= end:
            out.append(max(dt.date(y, m, 1), start))
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    else:
        raise ApiError(400, f"invalid granularity: {granularity!r}")
    return tuple(out)


def _date_range(params: Mapping[str, str]) -> tuple[dt.date, dt.date]:
    start = parse_date(params.get("start_date"), "start_date")
    end = parse_date(params.get("end_date"), "end_date")
    if end < start:
        raise ApiError(400, "end_date is before start_date")
    return start, end


def _market(market: str) -> str:
    if market not in MARKETS:
        raise ApiError(400, f"invalid market: {market!r}")
    return market


# --------------------------------------------------------------------------
# JSON endpoints: each is (list key, paged?, prepare -> (total, record(i)))
# --------------------------------------------------------------------------

COUNTRIES: tuple[tuple[str, str], ...] = (
    ("US", "United States"),
    ("GB", "United Kingdom"),
    ("FR", "France"),
    ("DE", "Germany"),
    ("JP", "Japan"),
    ("KR", "South Korea"),
    ("CN", "China"),
    ("BR", "Brazil"),
    ("IN", "India"),
    ("CA", "Canada"),
    ("AU", "Australia"),
    ("IT", "Italy"),
    ("ES", "Spain"),
    ("MX", "Mexico"),
    ("RU", "Russia"),
    ("NL", "Netherlands"),
    ("SE", "Sweden"),
    ("CH", "Switzerland"),
    ("TR", "Turkey"),
    ("ID", "Indonesia"),
    ("TW", "Taiwan"),
    ("HK", "Hong Kong"),
    ("SG", "Singapore"),
    ("TH", "Thailand"),
    ("VN", "Vietnam"),
    ("PL", "Poland"),
    ("SA", "Saudi Arabia"),
    ("AE", "United Arab Emirates"),
    ("ZA", "South Africa"),
    ("AR", "Argentina"),
    ("WW", "Worldwide"),
)

_WORDS = (
    "great",
    "app",
    "love",
    "crash",
    "update",
    "slow",
    "fast",
    "ads",
    "useful",
    "fun",
    "battery",
    "login",
    "sync",
    "design",
    "price",
    "support",
    "bug",
    "feature",
    "daily",
    "best",
)

RecordFn = Callable[[int], dict[str, Any]]


@dataclass(frozen=True)
class _Prepared:
    total: int
    record: RecordFn
    extra: dict[str, Any]


@dataclass(frozen=True)
class _Endpoint:
    pattern: re.Pattern[str]
    key: str
    paged: bool
    prepare: Callable[[dict[str, str], Mapping[str, str]], _Prepared]


def _history(args: dict[str, str], p: Mapping[str, str]) -> _Prepared:
    market = _market(args["market"])
    pid = args["product_id"]
    start, end = _date_range(p)
    gran = p.get("granularity") or "daily"
    dates = dates_in_range(start, end, gran)
    countries = split_multi(p.get("countries")) or ["WW"]
    devices = split_multi(p.get("device")) or (["android"] if "android" in market or market == "google-play" else ["iphone", "ipad"])
    feeds = "+".join(split_multi(p.get("feeds")) or ["downloads"])
    nc, nd = len(countries), len(devices)

    def record(i: int) -> dict[str, Any]:
        d = dates[i // (nc * nd)]
        c = countries[(i // nd) % nc]
        dev = devices[i % nd]
        h = _h("history", market, pid, feeds, gran, d, c, dev)
        est: int | str = "N/A" if h % 11 == 0 else int(h % 100_000)
        return {"date": d.isoformat(), "device": dev, "estimate": est, "country": c}

    return _Prepared(len(dates) * nc * nd, record, {"product_id": pid, "market": market})


def _reviews(args: dict[str, str], p: Mapping[str, str]) -> _Prepared:
    market = _market(args["market"])
    pid = args["product_id"]
    start, end = _date_range(p)
    countries = split_multi(p.get("countries")) or ["US"]
    ratings = [int(r) for r in split_multi(p.get("rating")) if r.isdigit() and 1 <= int(r) <= 5] or [1, 2, 3, 4, 5]
    key = ("reviews", market, pid, start, end, "+".join(countries), "+".join(map(str, ratings)))
    total = _h(*key) % 26
    ndays = (end - start).days + 1

    def record(i: int) -> dict[str, Any]:
        h = _h(*key, i)
        words = [_WORDS[(h >> (4 * k)) % len(_WORDS)] for k in range(8)]
        return {
            "review_id": f"{_h(*key, i, 'id') % 10**12:012d}",
            "date": (start + dt.timedelta(days=h % ndays)).isoformat(),
            "rating": ratings[h % len(ratings)],
            "title": " ".join(words[:3]).capitalize(),
            "text": " ".join(words) + ".",
            "country": countries[(h >> 20) % len(countries)],
            "version": f"{1 + h % 5}.{(h >> 8) % 10}.{(h >> 12) % 10}",
            "reviewer": f"user{(h >> 24) % 100000}",
        }

    return _Prepared(total, record, {"product_id": pid, "market": market})


def _ratings(args: dict[str, str], p: Mapping[str, str]) -> _Prepared:
    market = _market(args["market"])
    pid = args["product_id"]
    countries = split_multi(p.get("countries")) or ["US", "GB", "FR", "DE", "JP"]

    def record(i: int) -> dict[str, Any]:
        c = countries[i]
        h = _h("ratings", market, pid, c)
        stars = [int((h >> (8 * k)) % 5000) for k in range(5)]
        total = sum(stars)
        avg = round(sum((k + 1) * s for k, s in enumerate(stars)) / total, 2) if total else 0.0
        out: dict[str, Any] = {"country": c, "average": avg, "rating_count": total}
        out.update({f"star_{k + 1}_count": s for k, s in enumerate(stars)})
        return out

    return _Prepared(len(countries), record, {"product_id": pid, "market": market})


def _details(args: dict[str, str], p: Mapping[str, str]) -> _Prepared:
    market = _market(args["market"])
    pid = args["product_id"]
    h = _h("details", market, pid)
    product = {
        "product_id": pid,
        "product_name": f"App {pid}",
        "market": market,
        "publisher_id": h % 10**6,
        "publisher_name": f"Publisher {h % 997}",
        "main_category": ("Games", "Productivity", "Social", "Finance", "Utilities")[h % 5],
        "price": "0.00" if h % 3 else f"{h % 10}.99",
        "release_date": (dt.date(2010, 1, 1) + dt.timedelta(days=h % 4000)).isoformat(),
        "has_iap": bool(h & 1),
        "description": "An emulated app used to exercise the pipeline.",
    }
    return _Prepared(1, lambda i: product, {})


def _accounts(args: dict[str, str], p: Mapping[str, str]) -> _Prepared:
    total = 23

    def record(i: int) -> dict[str, Any]:
        h = _h("account", i)
        return {
            "account_id": 100_000 + i * 7,
            "account_name": f"Account {i}",
            "market": ("ios", "google-play", "amazon-appstore")[i % 3],
            "vertical": "apps",
            "publisher_name": f"Publisher {h % 997}",
            "first_sales_date": (dt.date(2015, 1, 1) + dt.timedelta(days=h % 2000)).isoformat(),
            "account_status": "OK" if h % 7 else "ERROR",
        }

    return _Prepared(total, record, {})


def _products(args: dict[str, str], p: Mapping[str, str]) -> _Prepared:
    acc = args["account_id"]
    total = 1 + _h("products", acc) % 15

    def record(i: int) -> dict[str, Any]:
        h = _h("product", acc, i)
        return {
            "product_id": 300_000_000 + h % 700_000_000,
            "product_name": f"Product {acc}-{i}",
            "market": ("ios", "google-play")[h % 2],
            "status": bool(h % 5),
            "first_sales_date": (dt.date(2015, 1, 1) + dt.timedelta(days=h % 2000)).isoformat(),
        }

    return _Prepared(total, record, {"account_id": acc})


def _sales(args: dict[str, str], p: Mapping[str, str]) -> _Prepared:
    acc, pid = args["account_id"], args["product_id"]
    start, end = _date_range(p)
    dates = dates_in_range(start, end, "daily")
    countries = split_multi(p.get("countries")) or ["US"]
    currency = p.get("currency") or "USD"
    nc = len(countries)

    def record(i: int) -> dict[str, Any]:
        d, c = dates[i // nc], countries[i % nc]
        h = _h("sales", acc, pid, d, c)
        dl, up = int(h % 50_000), int((h >> 16) % 20_000)
        return {
            "date": d.isoformat(),
            "country": c,
            "units": {"product": {"downloads": dl, "updates": up}},
            "revenue": {"product": {"downloads": f"{(h >> 32) % 100_000 / 100:.2f}"}},
        }

    return _Prepared(len(dates) * nc, record, {"currency": currency})


def _countries(args: dict[str, str], p: Mapping[str, str]) -> _Prepared:
    lst = [{"country_code": c, "country_name": n} for c, n in COUNTRIES]
    return _Prepared(len(lst), lambda i: lst[i], {})


_ENDPOINTS: tuple[_Endpoint, ...] = tuple(
    _Endpoint(re.compile(pat), key, paged, fn)
    for pat, key, paged, fn in (
        (r"/v1\.3/intelligence/apps/(?P<market>[^/]+)/app/(?P<product_id>[^/]+)/history", "list", True, _history),
        (r"/v1\.3/apps/(?P<market>[^/]+)/app/(?P<product_id>[^/]+)/reviews", "reviews", True, _reviews),
        (r"/v1\.3/apps/(?P<market>[^/]+)/app/(?P<product_id>[^/]+)/ratings", "ratings", False, _ratings),
        (r"/v1\.3/apps/(?P<market>[^/]+)/app/(?P<product_id>[^/]+)/details", "product", False, _details),
        (r"/v1\.3/accounts", "accounts", True, _accounts),
        (r"/v1\.3/accounts/(?P<account_id>[^/]+)/products", "products", True, _products),
        (r"/v1\.3/accounts/(?P<account_id>[^/]+)/products/(?P<product_id>[^/]+)/sales", "sales_list", True, _sales),
        (r"/v1\.3/meta/countries", "country_list", False, _countries),
    )
)


def _resolve(path: str) -> tuple[_Endpoint, dict[str, str]]:
    path = path.rstrip("/") or "/"
    for ep in _ENDPOINTS:
        m = ep.pattern.fullmatch(path)
        if m:
            return ep, m.groupdict()
    raise ApiError(404, f"unknown endpoint: {path}")


def _norm_params(path: str, params: Mapping[str, Any] | None) -> tuple[str, dict[str, str]]:
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(path)
    out: dict[str, str] = dict(parse_qsl(parts.query, keep_blank_values=True))
    for k, v in (params or {}).items():
        out[k] = v if isinstance(v, str) else "+".join(map(str, v))
    return parts.path, out


def list_key(path: str) -> str:
    """The JSON key holding the records for a v1.3 path (e.g. ``list``, ``reviews``)."""
    return _resolve(_norm_params(path, None)[0])[0].key


def expected_records(path: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every record the endpoint serves for these params, across all pages, in order.

    ``params`` values may be strings (``"US+FR"``) or lists; a query string in
    ``path`` is merged in. Raises :class:`ApiError` where the server would answer an error.
    """
    p, q = _norm_params(path, params)
    ep, args = _resolve(p)
    prep = ep.prepare(args, q)
    if ep.key == "product":
        return [prep.record(0)]
    return [prep.record(i) for i in range(prep.total)]


def _with_page_index(path: str, raw_query: str, index: int) -> str:
    """``path?query`` with page_index replaced, other params kept byte-for-byte."""
    kept = [part for part in raw_query.split("&") if part and part.split("=", 1)[0] != "page_index"]
    kept.append(f"page_index={index}")
    return f"{path}?{'&'.join(kept)}"


def page_body(path: str, raw_query: str, params: Mapping[str, str], page_size: int) -> dict[str, Any]:
    """The JSON body for one request to a v1.3 endpoint (raises ApiError for 4xx)."""
    ep, args = _resolve(path)
    prep = ep.prepare(args, params)
    body: dict[str, Any] = {"code": 200, **prep.extra}
    if ep.key == "product":
        body["product"] = prep.record(0)
        return body
    if not ep.paged:
        body[ep.key] = [prep.record(i) for i in range(prep.total)]
        return body
    if "page_size" in params:
        ps = params["page_size"]
        if not ps.isdigit() or not 1 <= int(ps) <= MAX_PAGE_SIZE:
            raise ApiError(400, f"invalid page_size: {ps!r} (1..{MAX_PAGE_SIZE})")
        page_size = int(ps)
    raw_index = params.get("page_index", "0") or "0"
    if not raw_index.isdigit():
        raise ApiError(400, f"invalid page_index: {raw_index!r}")
    index = int(raw_index)
    pages = max(1, math.ceil(prep.total / page_size))
    if index >= pages:
        raise ApiError(400, f"page_index {index} out of range (page_num={pages})")
    lo, hi = index * page_size, min(prep.total, (index + 1) * page_size)
    body.update(
        {
            "page_num": pages,
            "page_index": index,
            "prev_page": _with_page_index(path, raw_query, index - 1) if index > 0 else None,
            "next_page": _with_page_index(path, raw_query, index + 1) if index + 1 < pages else None,
            ep.key: [prep.record(i) for i in range(lo, hi)],
        }
    )
    return body


# --------------------------------------------------------------------------
# Bulk listing
# --------------------------------------------------------------------------

_NAME_KEY = b"apilake-emulator/bulk-name"
_OBJECT_KEY = b"apilake-emulator/object-store"


def bundle_id(bundle: str) -> int:
    """The deterministic numeric id the vendor embeds in a bundle's file names."""
    return 10_000 + _h("bundle", bundle) % 90_000


def name_signature(name: str) -> str:
    """The ``signature`` query param of a listing URL (HMAC of the name)."""
    return hmac.new(_NAME_KEY, name.encode(), hashlib.sha256).hexdigest()[:40]


def object_signature(name: str) -> str:
    """The ``X-Amz-Signature`` of the pre-signed object-store URL."""
    return hmac.new(_OBJECT_KEY, name.encode(), hashlib.sha256).hexdigest()


def bulk_file_names(
    bundles: Iterable[str] | str,
    start: str | dt.date,
    end: str | dt.date,
    granularity: str = "daily",
    metric_files: int = 2,
    dimensions: Sequence[str] = ("product_id", "company_id"),
) -> list[str]:
    """File names of a listing, in listing order (date, bundle, metrics then dimensions)."""
    bl = split_multi(bundles) if isinstance(bundles, str) else list(bundles)
    if not bl:
        raise ApiError(400, "missing parameter: metric_bundles")
    for b in bl:
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", b):
            raise ApiError(400, f"invalid metric bundle: {b!r}")
    s = start if isinstance(start, dt.date) else parse_date(start, "start_date")
    e = end if isinstance(end, dt.date) else parse_date(end, "end_date")
    names: list[str] = []
    for d in dates_in_range(s, e, granularity):
        iso, compact = d.isoformat(), d.strftime("%Y%m%d")
        for b in bl:
            bid = bundle_id(b)
            for n in range(1, metric_files + 1):
                names.append(f"metrics/{b}/all/all/{granularity}/{iso}/data.{bid}.{compact}.{n}.csv.gz")
            for dim in dimensions:
                names.append(f"dimensions/{b}/{granularity}/{iso}/{dim}.{bid}.{compact}.1.csv.gz")
    return names


def expected_file_names(bundles: Iterable[str] | str, start: str | dt.date, end: str | dt.date, granularity: str, config: Any) -> list[str]:
    """File names the emulator lists for these params under ``config`` (an EmulatorConfig)."""
    return bulk_file_names(bundles, start, end, granularity, config.metric_files, tuple(config.dimensions))


# --------------------------------------------------------------------------
# Bulk file bytes: multi-member gzip = head(name) + body * k + stored tail
# --------------------------------------------------------------------------

CSV_HEADER = "date,country,product_id,metric,value\n"
_METRICS = ("downloads", "revenue", "dau", "mau", "sessions", "time_spent")
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0, OS unknown
_TAIL_ROW = 48  # fixed tail row width; the last row absorbs the remainder
_TAIL_OVERHEAD = 10 + 5 + 8  # gzip header + one stored block header + trailer
_TAIL_MIN = _TAIL_OVERHEAD + _TAIL_ROW


def _gzip_member(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


@functools.lru_cache(maxsize=1)
def _body_member() -> bytes:
    """The shared middle member, compressed once per process (~40 KiB, realistic ratio)."""
    rng = random.Random(20240101)
    rows = []
    for _ in range(5000):
        d = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(28))
        c = COUNTRIES[rng.randrange(len(COUNTRIES) - 1)][0]
        rows.append(
            f"{d.isoformat()},{c},{rng.randrange(300_000_000, 1_700_000_000)},{_METRICS[rng.randrange(len(_METRICS))]},{int(rng.paretovariate(1.2) * 10)}\n"
        )
    member = _gzip_member("".join(rows).encode())
    assert len(member) + _TAIL_MIN + _TAIL_ROW < 65535, "tail must fit one stored block"
    return member


@functools.lru_cache(maxsize=4096)
def _head_member(name: str) -> bytes:
    """The first member: CSV header plus a few rows derived from the name (files all differ)."""
    m = re.search(r"\d{4}-\d{2}-\d{2}", name)
    day = m.group(0) if m else "2024-01-01"
    h = _h("file", name)
    rows = [CSV_HEADER]
    for i in range(5 + h % 20):
        hi = _h("file", name, i)
        rows.append(
            f"{day},{COUNTRIES[hi % (len(COUNTRIES) - 1)][0]},{300_000_000 + hi % 1_000_000_000},"
            f"{_METRICS[(hi >> 12) % len(_METRICS)]},{(hi >> 20) % 100_000}\n"
        )
    return _gzip_member("".join(rows).encode())


def _tail_text(length: int) -> bytes:
    """Exactly ``length`` bytes of CSV rows (length >= _TAIL_ROW)."""
    n = length // _TAIL_ROW
    rem = length - n * _TAIL_ROW
    rows = []
    for i in range(n):
        width = _TAIL_ROW + (rem if i == n - 1 else 0)
        prefix = f"2024-01-01,{COUNTRIES[i % 30][0]},{1_000_000_000 + i},{_METRICS[i % 6]},"
        rows.append(prefix + str(i % 1000).zfill(width - len(prefix) - 1) + "\n")
    out = "".join(rows).encode()
    assert len(out) == length
    return out


@functools.lru_cache(maxsize=256)
def _tail_member(total: int) -> bytes:
    """A stored (uncompressed) gzip member of exactly ``total`` bytes: lets files hit their size."""
    data = _tail_text(total - _TAIL_OVERHEAD)
    n = len(data)
    block = b"\x01" + struct.pack("<HH", n, n ^ 0xFFFF) + data
    member = _GZIP_HEADER + block + struct.pack("<II", zlib.crc32(data), n & 0xFFFFFFFF)
    assert len(member) == total
    return member


def _layout(name: str, size: int) -> tuple[bytes, int, bytes]:
    """(head member, number of body members, tail member) for a file of target ``size``."""
    head = _head_member(name)
    body = _body_member()
    if size <= len(head):
        return head, 0, b""
    if size < len(head) + _TAIL_MIN:
        return head, 0, _tail_member(_TAIL_MIN)  # exceeds the target slightly
    k = (size - len(head) - _TAIL_MIN) // len(body)
    return head, k, _tail_member(size - len(head) - k * len(body))


def file_length(name: str, size: int) -> int:
    """Exact byte length of the file served for (name, target size); == size unless tiny."""
    head, k, tail = _layout(name, size)
    return len(head) + k * len(_body_member()) + len(tail)


def member_boundaries(name: str, size: int) -> list[int]:
    """Byte offsets where a gzip member ends (a cut there would still be valid gzip)."""
    head, k, tail = _layout(name, size)
    lb = len(_body_member())
    out = [len(head) + i * lb for i in range(k + 1)]
    if tail:
        out.append(out[-1] + len(tail))
    return out


def _segments(name: str, size: int, start: int, stop: int) -> Iterator[memoryview]:
    head, k, tail = _layout(name, size)
    pos = 0
    for data, count in ((head, 1), (_body_member(), k), (tail, 1)):
        n = len(data)
        if not n or not count:
            continue
        span = n * count
        if pos + span > start and pos < stop:
            mv = memoryview(data)
            for j in range(max(0, (start - pos) // n), count):
                s = pos + j * n
                if s >= stop:
                    break
                yield mv[max(0, start - s) : min(n, stop - s)]
        pos += span


def _coalesce(pieces: Iterable[memoryview | bytes], chunk: int) -> Iterator[bytes]:
    buf = bytearray()
    for piece in pieces:
        buf += piece
        while len(buf) >= chunk:
            yield bytes(buf[:chunk])
            del buf[:chunk]
    if buf:
        yield bytes(buf)


def iter_file_range(name: str, size: int, start: int = 0, stop: int | None = None, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Bytes [start, stop) of the file, in pieces of ``chunk`` bytes, never materialising it."""
    total = file_length(name, size)
    stop = total if stop is None else min(stop, total)
    return _coalesce(_segments(name, size, max(0, start), stop), chunk)


def iter_file_chunks(name: str, size: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The whole file in ``chunk``-byte pieces (streaming; cheap even for GiB sizes)."""
    return iter_file_range(name, size, 0, None, chunk)


def file_bytes(name: str, size: int) -> bytes:
    """The whole file in memory (for small files in tests)."""
    return b"".join(iter_file_chunks(name, size))


@functools.lru_cache(maxsize=1024)
def file_sha256(name: str, size: int) -> str:
    """Hex sha256 of the file served for (name, target size)."""
    h = hashlib.sha256()
    for c in iter_file_chunks(name, size):
        h.update(c)
    return h.hexdigest()


def file_rows(name: str, size: int) -> int:
    """CSV rows (the header left out) in the file served for (name, target size): what a table
    built from it must hold, known without inflating the file."""
    head, k, tail = _layout(name, size)
    rows = gunzip_members(head).count(b"\n") - 1 + k * gunzip_members(_body_member()).count(b"\n")
    return rows + (gunzip_members(tail).count(b"\n") if tail else 0)


def gunzip_members(data: bytes) -> bytes:
    """Decompress a multi-member gzip fully (what ``gzip -dc`` does); raises on truncation."""
    out = []
    while data:
        d = zlib.decompressobj(wbits=31)
        out.append(d.decompress(data))
        if not d.eof:
            raise zlib.error("truncated gzip stream")
        data = d.unused_data
    return b"".join(out)
