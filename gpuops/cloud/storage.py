"""The S3 side of a run: the bucket, the inputs bundle, the log, the status file.

Layout of a run under the bucket: ``gpuops/runs/<run_id>/`` holds ``inputs.tar.gz`` (the spec and
its data folder, uploaded before launch), ``bootstrap.log`` (the instance's log, uploaded every
minute and at the end), ``status.json`` (running / succeeded / failed / interrupted),
``checkpoints/`` and ``artifacts/``.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

MAX_BUNDLE_BYTES = 512 * 1024 * 1024


def run_prefix(run_id: str) -> str:
    return f"gpuops/runs/{run_id}"


def default_bucket(account_id: str, region: str) -> str:
    return f"gpuops-{account_id}-{region}"


def ensure_bucket(s3: Any, bucket: str, region: str) -> bool:
    """Create the bucket (private) when it does not exist. True when it was created."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as e:
        if str(e.response.get("Error", {}).get("Code")) not in {"404", "NoSuchBucket", "NotFound"}:
            raise
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**kwargs)
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    return True


def _skip(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    name = Path(info.name).name
    if name in {"__pycache__", ".git", "mlflow.db", "mlruns"} or name.endswith(".pyc"):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build_inputs_bundle(spec_path: Path, data: dict[str, str],
                        extra: dict[str, bytes] | None = None) -> bytes:
    """A tar.gz with the spec file at the top, each data folder at its bundle path (``data`` maps a
    local folder to it, e.g. ``data/train``), and ``extra`` files (name -> bytes: the resolved
    experiment, whose data paths are those bundle paths)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        if spec_path.is_file():
            tar.add(spec_path, arcname=spec_path.name, filter=_skip)
        for src, arc in data.items():
            tar.add(src, arcname=arc, filter=_skip)
        for name, blob in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(blob), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(blob))
    blob = buf.getvalue()
    if len(blob) > MAX_BUNDLE_BYTES:
        from gpuops.errors import UsageError

        raise UsageError(
            f"the spec's data is {len(blob) >> 20} MiB packed, over the "
            f"{MAX_BUNDLE_BYTES >> 20} MiB the aws target uploads",
            hint="put large data sets in S3 and point the spec at them",
        )
    return blob


def read_log(s3: Any, bucket: str, run_id: str, offset: int = 0) -> tuple[bytes, int] | None:
    """New log bytes from ``offset`` on, and the next offset; None when there is no log yet."""
    from botocore.exceptions import ClientError

    key = f"{run_prefix(run_id)}/bootstrap.log"
    try:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if offset:
            kwargs["Range"] = f"bytes={offset}-"
        body = s3.get_object(**kwargs)["Body"].read()
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code"))
        if code in {"NoSuchKey", "404"}:
            return None
        if code == "InvalidRange":  # nothing new since offset
            return b"", offset
        raise
    return body, offset + len(body)


def read_status(s3: Any, bucket: str, run_id: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        body = s3.get_object(Bucket=bucket, Key=f"{run_prefix(run_id)}/status.json")["Body"].read()
    except ClientError as e:
        if str(e.response.get("Error", {}).get("Code")) in {"NoSuchKey", "404"}:
            return None
        raise
    try:
        return dict(json.loads(body))
    except ValueError:
        return None


def list_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def write_launch(s3: Any, bucket: str, run_id: str, doc: dict[str, Any]) -> None:
    """What a resume needs to relaunch the same run (spec file name, overrides, smoke)."""
    s3.put_object(Bucket=bucket, Key=f"{run_prefix(run_id)}/launch.json", Body=json.dumps(doc).encode())


def read_launch(s3: Any, bucket: str, run_id: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        body = s3.get_object(Bucket=bucket, Key=f"{run_prefix(run_id)}/launch.json")["Body"].read()
    except ClientError as e:
        if str(e.response.get("Error", {}).get("Code")) in {"NoSuchKey", "404", "NoSuchBucket"}:
            return None
        raise
    return dict(json.loads(body))
