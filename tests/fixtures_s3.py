"""Pytest fixtures for a real S3 endpoint (SeaweedFS ``weed mini``), loaded as a plugin.

One server per test session (it starts in about 0.9 s and stops in about 1.3 s); tests
isolate themselves by bucket instead. Credentials are random per session so nothing can pass by
accident against some other S3 server that happens to be reachable with well-known keys.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator

import pytest
from minio import Minio

from deepwatch.embedded.s3server import S3Server, start_seaweedfs


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    base = tmp_path_factory.mktemp("seaweedfs")
    server = start_seaweedfs(
        base / "data",
        base / "weed.log",
        access_key=f"AK{secrets.token_hex(8).upper()}",
        secret_key=secrets.token_urlsafe(30),
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[tuple[Minio, str]]:
    """A new, empty bucket of its own for each test, removed with its contents afterwards.

    Removing matters beyond tidiness: every SeaweedFS bucket that holds data claims a volume
    slot of its own, and the slots run out ("no free volumes", HTTP 500) after some dozens.
    """
    client = s3_server.client()
    bucket = f"test-{uuid.uuid4().hex[:20]}"
    client.make_bucket(bucket)
    try:
        yield client, bucket
    finally:
        if s3_server.alive():
            # weed mini runs with -s3.allowDeleteBucketNotEmpty (its default), so this also
            # drops whatever the test left in the bucket.
            client.remove_bucket(bucket)
