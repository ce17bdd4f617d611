"""Object keys: the default layout, page keys, the parts of a bulk file URL, and the names
apilake keeps for its own files. Pure functions.

Default layout (Hive-style `dt=` partitions, in the spirit of the batch apilake replaces)::

    json:  {source}/{endpoint}/dt={date}/{matrix values}.json
           e.g. dataai/app_history/dt=2026-11-25/market=ios,product_id=284882215.json
    bulk:  {source}/{endpoint}/{file_kind}/{dimension}/dt={file_date}/{file_name}
           e.g. dataai/bulk/dimensions/product_id/dt=2026-11-25/product_id.9.20261125.1.csv.gz
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import posixpath
import re
from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

TEMP_DIR = ".apilake-tmp"  # the hidden folder beside a local lake's objects that holds a folder's temporary files
TEMP_MARK = f"{TEMP_DIR}-"  # in every temporary file's name
LOCK_SUFFIX = ".apilake-lock"  # beside a local object written by compare-and-swap (`put_if`)
_MARKER = re.compile(r"\.(?=apilake-(?:tmp|lock))", re.IGNORECASE)  # the dot that starts any of the three


def disarm_markers(key: str) -> str:
    """`key` with the dot that starts a marker of apilake's own files percent-encoded
    (`b.apilake-tmp-x.csv.gz` → `b%2Eapilake-tmp-x.csv.gz`): listings pass over such names and
    clean-ups remove them, so an object named so would land unseen and later vanish. Every key,
    whatever its destination, goes through here (`templates.sanitize_key`): a job lands the same
    keys into a folder and into S3. Case-blind, for case-insensitive file systems."""
    return _MARKER.sub("%2E", key)


DEFAULT_BULK_KEY = "{source}/{endpoint}/{file_kind}/{dimension}/dt={file_date}/{file_name}"

_ISO_DATE = re.compile(r"(?<!\d)(\d{4}-\d{2}-\d{2})(?!\d)")


_EXTENSION = re.compile(r"(?:\.[A-Za-z][A-Za-z0-9]{0,7})+$")


def default_json_key(matrix: Mapping[str, object], extension: str = ".json") -> str:
    """The default key template of a JSON (or raw file) endpoint: one object per matrix combination and date."""
    stem = ",".join(f"{name}={{{name}}}" for name in matrix) or "data"
    return "{source}/{endpoint}/dt={date}/" + stem + extension


def extension(path: str | None) -> str:
    """The file extension at the end of a URL path (`/export.csv.gz` → `.csv.gz`), or ''."""
    name = (path or "").rsplit("/", 1)[-1].split("?", 1)[0]
    found = _EXTENSION.search(name.rsplit("}", 1)[-1])
    return found.group(0) if found else ""


#: The extension a file without one in its URL takes from its Content-Type. A fixed map, never
#: the host's `mimetypes` (keys must not depend on the machine), and never the header's own text:
#: a type not named here adds nothing, so no vendor's header can put odd characters in a key.
TYPE_EXTENSIONS = {
    "application/json": ".json",
    "application/x-ndjson": ".ndjson",
    "application/ndjson": ".ndjson",
    "application/jsonl": ".jsonl",
    "text/csv": ".csv",
    "text/tab-separated-values": ".tsv",
    "text/plain": ".txt",
    "application/xml": ".xml",
    "text/xml": ".xml",
    "text/html": ".html",
    "application/yaml": ".yaml",
    "application/gzip": ".gz",
    "application/x-gzip": ".gz",
    "application/zip": ".zip",
    "application/x-tar": ".tar",
    "application/zstd": ".zst",
    "application/x-bzip2": ".bz2",
    "application/pdf": ".pdf",
    "application/octet-stream": ".bin",
    "application/vnd.apache.parquet": ".parquet",
    "application/x-parquet": ".parquet",
    "application/avro": ".avro",
    "application/vnd.ms-excel": ".xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "image/png": ".png",
    "image/jpeg": ".jpg",
}

_URL_EXTENSION = re.compile(r"(?:\.[A-Za-z][A-Za-z0-9]{0,7}){1,2}$")


def url_extension(url: str) -> str:
    """The extension at the end of a URL's path (`…/export.csv.gz?x=1` → `.csv.gz`): at most two
    parts of a letter and up to seven letters or digits each, else ''."""
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    found = _URL_EXTENSION.search(name)
    return found.group(0) if found and found.start() > 0 else ""


def type_extension(content_type: str | None) -> str:
    """The extension of a Content-Type (`text/csv; charset=utf-8` → `.csv`) by `TYPE_EXTENSIONS`, or ''."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return TYPE_EXTENSIONS.get(media, "")


def typed_keys(key: str) -> list[str]:
    """Every key a file landed at whose key takes its extension from the Content-Type."""
    return [key, *(key + ext for ext in sorted(set(TYPE_EXTENSIONS.values())))]


def page_key(key: str, page: int) -> str:
    """Where page `page` (1-based) of a paginated unit lands: page 1 at the key, page n beside it.

    `.../ios.json` → `.../ios.json` (page 1), `.../ios.page-0002.json` (page 2), ...
    """
    if page == 1:
        return key
    folder, name = posixpath.split(key)
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    suffix = f".page-{page:04d}" + (f".{ext}" if ext else "")
    return posixpath.join(folder, stem + suffix)


_PAGE = re.compile(r"\.page-(\d{4,})")


def page_bases(key: str) -> list[tuple[str, int]]:
    """Every (key, page) whose page key (`page_key`) is `key`, pages 2 and up: what a paginated
    unit at that key would write, or remove on a shorter refetch, at `key`."""
    folder, name = posixpath.split(key)
    found = []
    for match in _PAGE.finditer(name):
        base = posixpath.join(folder, name[: match.start()] + name[match.end() :])
        page = int(match.group(1))
        if page >= 2 and page_key(base, page) == key:
            found.append((base, page))
    return found


def file_values(url: str, run_date: dt.date) -> dict[str, str]:
    """Template values describing one bulk file URL.

    The vendor names files in a `name=` query parameter (`metrics/...` or `dimensions/...`);
    other vendors' URLs fall back to the URL path.
    """
    parts = urlsplit(url)
    name = parse_qs(parts.query).get("name", [""])[0]
    url_path = (name or parts.path).strip("/")
    segments = url_path.split("/")
    file_kind = segments[0] if name and segments[0] in ("metrics", "dimensions") else "files"
    dimension = ""
    if file_kind == "dimensions":
        dimension = segments[-1].split(".", 1)[0]
    found = _ISO_DATE.search(url_path)
    return {
        "file_kind": file_kind,
        "dimension": dimension,
        "file_name": segments[-1] or "index",
        "url_path": url_path,
        "file_date": found.group(1) if found else run_date.isoformat(),
    }


def file_selected(values: Mapping[str, str], files: str, include: list[str], exclude: list[str]) -> bool:
    """Does a listed file pass the endpoint's `files`, `include` and `exclude` filters?

    Patterns are shell globs matched against the file's URL path (`metrics/*/daily/*`).
    """
    if files != "all" and values["file_kind"] != files:
        return False
    path = values["url_path"]
    if include and not any(fnmatch.fnmatchcase(path, p) for p in include):
        return False
    return not any(fnmatch.fnmatchcase(path, p) for p in exclude)
