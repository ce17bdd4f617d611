"""The S3 limit: how fast the S3 server ingests files that are already on local disk.

Uploads every file of a folder with boto3's `upload_file` (multipart for big files, 10 threads per
file), several files at a time; no HTTP source, no checks: what any S3 landing is bounded by.

    python -m harness.s3_ingest --endpoint URL --dest s3://bucket/prefix --files-in-flight 4 FOLDER
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from botocore.config import Config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--files-in-flight", type=int, default=4)
    parser.add_argument("folder", type=Path)
    a = parser.parse_args()
    bucket, _, prefix = a.dest.removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=a.endpoint, config=Config(max_pool_connections=64))
    files = sorted(p for p in a.folder.rglob("*") if p.is_file())

    def upload(path: Path) -> None:
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(a.folder).as_posix()}".lstrip("/"))

    with ThreadPoolExecutor(a.files_in_flight) as pool:
        list(pool.map(upload, files))
    print(f"{len(files)} files uploaded to {a.dest}")


if __name__ == "__main__":
    main()
