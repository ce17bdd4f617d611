"""The original batch's pattern, written for the benchmark in its own words.

Strictly sequential, as the cron scripts apilake replaces were: JSON calls one after another; bulk
files one at a time, each downloaded with a streaming GET into a temporary file, then copied into
the local lake (or uploaded to S3 with boto3's `upload_file`), then deleted. Charitable where the
originals were careless: status codes are checked, one keep-alive session is reused, and chunks
are 1 MiB, so the comparison is about the shape of the work, not about a slow loop.

    python bench/original_batch.py bulk --api URL --token T --listing PATH --dest DIR|s3://bucket/prefix [--s3-endpoint URL]
    python bench/original_batch.py json --api URL --token T --paths-file FILE --dest DIR
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

CHUNK = 1 << 20


def download_to_temp(session: requests.Session, url: str, headers: dict[str, str]) -> str:
    """Stream `url` into a new temporary file; returns its path (requests follows the 302)."""
    with session.get(url, headers=headers, stream=True, timeout=60) as response:
        response.raise_for_status()
        with tempfile.NamedTemporaryFile(delete=False, suffix=".part") as tmp:
            for chunk in response.iter_content(chunk_size=CHUNK):
                tmp.write(chunk)
            return tmp.name


def land_file(tmp_path: str, dest: str, key: str, s3: object | None) -> None:
    """Copy the temporary file into the local lake, or upload it to S3."""
    if s3 is not None:
        bucket, _, prefix = dest.removeprefix("s3://").partition("/")
        s3.upload_file(tmp_path, bucket, f"{prefix.strip('/')}/{key}".lstrip("/"))  # type: ignore[attr-defined]
    else:
        target = Path(dest) / key
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path, target)


def run_bulk(api: str, token: str, listing: str, dest: str, s3_endpoint: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    session = requests.Session()
    s3 = None
    if dest.startswith("s3://"):
        import boto3

        s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    response = session.get(api + listing, headers=headers, timeout=60)
    response.raise_for_status()
    urls = response.json()["data"]["urls"]
    for url in urls:
        name = parse_qs(urlsplit(url).query)["name"][0]
        tmp_path = download_to_temp(session, url, headers)
        try:
            land_file(tmp_path, dest, name, s3)
        finally:
            os.remove(tmp_path)
    print(f"{len(urls)} files landed in {dest}")
    return 0


def run_json(api: str, token: str, paths_file: str, dest: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    session = requests.Session()
    paths = Path(paths_file).read_text().split()
    for path in paths:
        response = session.get(api + path, headers=headers, timeout=60)
        response.raise_for_status()
        target = Path(dest) / (path.strip("/").replace("/", "_") + ".json")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(response.content)
    print(f"{len(paths)} JSON responses landed in {dest}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)
    bulk = sub.add_parser("bulk")
    bulk.add_argument("--listing", required=True, help="path + query of the bulk listing call")
    bulk.add_argument("--s3-endpoint")
    js = sub.add_parser("json")
    js.add_argument("--paths-file", required=True, help="one API path per line")
    for p in (bulk, js):
        p.add_argument("--api", required=True)
        p.add_argument("--token", required=True)
        p.add_argument("--dest", required=True)
    a = parser.parse_args()
    if a.kind == "bulk":
        return run_bulk(a.api, a.token, a.listing, a.dest, a.s3_endpoint)
    return run_json(a.api, a.token, a.paths_file, a.dest)


if __name__ == "__main__":
    raise SystemExit(main())
