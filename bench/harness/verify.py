"""Before a run's time counts: every expected object landed, byte-identical, and nothing else.

Keys differ between contenders, so objects are compared as a multiset of sha256 digests (every
expected object differs from the others). apilake's own run records under `_apilake/` are not
data and are left out; anything else, a leftover temporary file included, counts as an extra.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECORDS_PREFIX = "_apilake/"
HASH_CHUNK = 4 << 20


@dataclass(frozen=True)
class Verdict:
    objects: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def compare(landed: dict[str, str], expected: Counter[str]) -> Verdict:
    """`landed` maps key -> sha256."""
    got = Counter(landed.values())
    problems = []
    missing = expected - got
    extra = got - expected
    if missing:
        problems.append(f"{sum(missing.values())} of {sum(expected.values())} expected objects missing or different")
    if extra:
        extras = [k for k, h in landed.items() if h in extra][:3]
        problems.append(f"{sum(extra.values())} unexpected objects, e.g. {extras}")
    return Verdict(len(landed), tuple(problems))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_local(root: Path, expected: Counter[str]) -> Verdict:
    files = [p for p in root.rglob("*") if p.is_file() and not p.relative_to(root).as_posix().startswith(RECORDS_PREFIX)]
    with ThreadPoolExecutor(4) as pool:  # hashlib releases the GIL on big buffers
        digests = pool.map(_sha256_file, files)
        return compare({p.relative_to(root).as_posix(): d for p, d in zip(files, digests, strict=True)}, expected)


def verify_count(root: Path, objects: int, files: Counter[str]) -> Verdict:
    """A mixed job: `objects` objects landed, among them every expected file byte-identical.

    (The JSON pages of a mixed job are checked by count only: their exact bytes depend on the
    query string as sent.)"""
    found = verify_local(root, files)
    problems = [p for p in found.problems if "unexpected" not in p]
    if found.objects != objects:
        problems.append(f"{found.objects} objects landed, {objects} expected")
    return Verdict(found.objects, tuple(problems))


def clear_local(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


def _s3_keys(client: Any, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _split(url: str) -> tuple[str, str]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/") + "/"


def verify_s3(client: Any, url: str, expected: Counter[str]) -> Verdict:
    bucket, prefix = _split(url)
    keys = [k for k in _s3_keys(client, bucket, prefix) if not k[len(prefix) :].startswith(RECORDS_PREFIX)]

    def digest(key: str) -> str:
        h = hashlib.sha256()
        for chunk in client.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(HASH_CHUNK):
            h.update(chunk)
        return h.hexdigest()

    with ThreadPoolExecutor(4) as pool:
        verdict = compare(dict(zip(keys, pool.map(digest, keys), strict=True)), expected)
    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    if uploads:
        return Verdict(verdict.objects, (*verdict.problems, f"{len(uploads)} multipart uploads left open"))
    return verdict


def clear_s3(client: Any, url: str) -> None:
    bucket, prefix = _split(url)
    for upload in client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    keys = _s3_keys(client, bucket, prefix)
    for i in range(0, len(keys), 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True})
