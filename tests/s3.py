"""A real S3 API on loopback for the tests: moto in server mode, one fresh bucket per test.

s3fs talks to it over HTTP exactly as it would to AWS (signed requests, multipart
uploads, server-side copies), so the artifact contract suite runs unchanged on s3://.
moto and s3fs are in the `dev` extra: these tests never skip.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from zeroloop.artifacts.transfer import open_location

# The smallest part S3 accepts (bytes); a block size this small makes a test file of a
# few MiB a multipart upload.
S3_MIN_PART_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class Location:
    """An artifact location URL with the storage options that reach it (none for file:// and memory://)."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of a moto S3 server on a free loopback port, for the whole session."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_location(s3_endpoint: str) -> Location:
    """A fresh, empty bucket on the loopback server; the location is a prefix inside it."""
    options = {
        "endpoint_url": s3_endpoint,
        "key": "zeroloop-test",
        "secret": "zeroloop-test-secret",
        "default_block_size": S3_MIN_PART_BYTES,
    }
    bucket = f"zeroloop-{uuid.uuid4().hex[:16]}"
    fs, _root = open_location(f"s3://{bucket}", options)
    fs.mkdir(bucket)
    return Location(f"s3://{bucket}/artifacts", options)
