"""Incomplete S3 multipart uploads under the artifact location: found and aborted, as a lifecycle rule would.

An upload of a file larger than the backend's block size is a multipart upload: its parts
are stored (and billed) as they arrive and become an object only when it completes. One
that dies half way (the endpoint cut it, the node vanished) leaves its parts in the bucket,
invisible to a listing of objects, until someone aborts it. Garbage collection lists the
uploads in progress under the location's prefix and aborts those started more than
`retention.multipart_grace_s` ago (S3's AbortIncompleteMultipartUpload lifecycle action does
the same, in whole days). Other backends have no such uploads: nothing to do.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

MAX_PAGES = 10_000  # bound on the listing's pages (1000 uploads each)


@dataclass(frozen=True)
class Upload:
    """One multipart upload in progress: its object key (in the bucket), id, and start (epoch seconds)."""

    key: str
    upload_id: str
    initiated: float


def is_s3(fs: Any) -> bool:
    """Whether `fs` is an S3 filesystem (s3fs), the backend whose uploads can be left incomplete."""
    protocol = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return bool({"s3", "s3a"} & set(protocol)) and hasattr(fs, "call_s3")


def incomplete_uploads(fs: Any, root: str, *, started_before: float) -> list[Upload]:
    """Multipart uploads under `root` (bucket/prefix) started before a time (epoch seconds); [] off S3."""
    if not is_s3(fs):
        return []
    bucket, _, prefix = root.partition("/")
    found: list[Upload] = []
    markers: dict[str, str] = {}
    for _page in range(MAX_PAGES):
        answer = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=f"{prefix}/" if prefix else "", **markers)
        for upload in answer.get("Uploads", []):
            initiated = upload["Initiated"]
            when = initiated.timestamp() if isinstance(initiated, datetime.datetime) else float(initiated)
            if when < started_before:
                found.append(Upload(upload["Key"], upload["UploadId"], when))
        if not answer.get("IsTruncated"):
            break
        markers = {"KeyMarker": answer["NextKeyMarker"], "UploadIdMarker": answer["NextUploadIdMarker"]}
    return found


def abort(fs: Any, root: str, uploads: list[Upload]) -> int:
    """Abort each upload (its stored parts are deleted); how many were aborted (one already gone counts too)."""
    bucket = root.partition("/")[0]
    for upload in uploads:
        fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=upload.key, UploadId=upload.upload_id)
    return len(uploads)
