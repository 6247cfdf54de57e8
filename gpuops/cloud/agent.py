"""The on-instance helper that the user-data bootstrap writes to disk and calls.

Standard library only (it runs with the instance's ``python3``, before and beside the
experiment's image), so the bootstrap needs neither the AWS CLI nor boto3. It does four things:

* IMDSv2: get a session token, read metadata paths (the spot ``instance-action`` notice, the
  instance role's temporary credentials).
* S3 through the REST API with Signature Version 4: put / get one object, list a prefix,
  sync a folder up or down.
* ECR: print a ``docker login`` password from ``GetAuthorizationToken`` (to stdout only).
* Credentials: the standard order that matters on an instance: environment variables, then the
  instance profile through IMDS. They are kept in memory and never printed or logged.

Configuration comes from the environment: ``GPUOPS_REGION``, ``GPUOPS_BUCKET``,
``GPUOPS_S3_ENDPOINT`` (only for S3-compatible endpoints such as a test server; path-style),
``GPUOPS_IMDS`` (default ``http://169.254.169.254``).

Usage: ``python3 agent.py {spot-action|put FILE KEY|get KEY FILE|cat KEY|sync-up DIR PREFIX|
sync-down PREFIX DIR|ecr-password}``. Exit status 0 on success, 3 when a key/notice is absent.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_TIMEOUT = 30


def _imds_base() -> str:
    return os.environ.get("GPUOPS_IMDS", "http://169.254.169.254").rstrip("/")


def imds_token() -> str:
    req = urllib.request.Request(
        _imds_base() + "/latest/api/token",
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read().decode()


def imds_get(path: str, token: str | None = None) -> str | None:
    """A metadata path's text, or None when the path does not exist (404)."""
    token = token or imds_token()
    req = urllib.request.Request(
        _imds_base() + "/latest/meta-data/" + path.lstrip("/"),
        headers={"X-aws-ec2-metadata-token": token},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def credentials() -> tuple[str, str, str | None]:
    key = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return key, secret, os.environ.get("AWS_SESSION_TOKEN")
    token = imds_token()
    roles = imds_get("iam/security-credentials/", token)
    if not roles:
        raise SystemExit("gpuops-agent: no credentials (no instance profile attached)")
    role = roles.split()[0].strip("/")
    doc = json.loads(imds_get("iam/security-credentials/" + role, token) or "{}")
    return doc["AccessKeyId"], doc["SecretAccessKey"], doc.get("Token")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _signed_request(
    method: str,
    url: str,
    service: str,
    region: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    payload_hash: str | None = None,
) -> urllib.request.Request:
    key, secret, session = credentials()
    parts = urllib.parse.urlsplit(url)
    now = _dt.datetime.now(_dt.timezone.utc)  # noqa: UP017 (python3.10 on the instance)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    if payload_hash is None:
        payload_hash = hashlib.sha256(body or b"").hexdigest()
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    hdrs.update({"host": parts.netloc, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash})
    if session:
        hdrs["x-amz-security-token"] = session
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    canon_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}" for k, v in sorted(query)
    )
    signed = ";".join(sorted(hdrs))
    canon_headers = "".join(f"{k}:{hdrs[k].strip()}\n" for k in sorted(hdrs))
    canon = "\n".join([method, parts.path or "/", canon_query, canon_headers, signed, payload_hash])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canon.encode()).hexdigest()])
    k = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), day), region), service), "aws4_request")
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    hdrs["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={key}/{scope}, SignedHeaders={signed}, Signature={sig}"
    )
    hdrs.pop("host")
    return urllib.request.Request(url, data=body, method=method, headers=hdrs)


def _region() -> str:
    return os.environ["GPUOPS_REGION"]


def _object_url(key: str, query: str = "") -> str:
    bucket = os.environ["GPUOPS_BUCKET"]
    path = urllib.parse.quote(key, safe="/-_.~")
    endpoint = os.environ.get("GPUOPS_S3_ENDPOINT")
    if endpoint:
        base = f"{endpoint.rstrip('/')}/{bucket}/{path}"
    else:
        base = f"https://{bucket}.s3.{_region()}.amazonaws.com/{path}"
    return base + (("?" + query) if query else "")


def s3_put(path: str, key: str) -> None:
    with open(path, "rb") as f:
        data = f.read()
    req = _signed_request(
        "PUT",
        _object_url(key),
        "s3",
        _region(),
        body=data,
        headers={"content-length": str(len(data)), "content-type": "application/octet-stream"},
    )
    with urllib.request.urlopen(req, timeout=_TIMEOUT * 10):
        pass


def s3_get(key: str) -> bytes | None:
    req = _signed_request("GET", _object_url(key), "s3", _region())
    try:
        with urllib.request.urlopen(req, timeout=_TIMEOUT * 10) as r:
            return r.read()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def s3_list(prefix: str) -> list[str]:
    keys: list[str] = []
    token = None
    while True:
        q = {"list-type": "2", "prefix": prefix}
        if token:
            q["continuation-token"] = token
        url = _object_url("", urllib.parse.urlencode(q))
        with urllib.request.urlopen(_signed_request("GET", url, "s3", _region()), timeout=_TIMEOUT) as r:
            root = ET.fromstring(r.read())
        keys += [c.findtext(f"{_NS}Key") or "" for c in root.findall(f"{_NS}Contents")]
        if root.findtext(f"{_NS}IsTruncated") != "true":
            return keys
        token = root.findtext(f"{_NS}NextContinuationToken")


def sync_up(folder: str, prefix: str) -> int:
    """Upload files that changed since the last sync (size + mtime manifest beside the folder)."""
    manifest_path = os.path.join(folder, ".gpuops-synced.json")
    try:
        with open(manifest_path) as f:
            seen = json.load(f)
    except (OSError, ValueError):
        seen = {}
    n = 0
    for root, _dirs, files in os.walk(folder):
        for name in sorted(files):
            full = os.path.join(root, name)
            rel = os.path.relpath(full, folder)
            if rel == ".gpuops-synced.json":
                continue
            st = os.stat(full)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
            if seen.get(rel) == stamp:
                continue
            s3_put(full, prefix.rstrip("/") + "/" + rel.replace(os.sep, "/"))
            seen[rel] = stamp
            n += 1
    with open(manifest_path, "w") as f:
        json.dump(seen, f)
    return n


def sync_down(prefix: str, folder: str) -> int:
    prefix = prefix.rstrip("/") + "/"
    n = 0
    for key in s3_list(prefix):
        rel = key[len(prefix) :]
        if not rel or rel.endswith("/") or ".." in rel.split("/"):
            continue
        data = s3_get(key)
        if data is None:
            continue
        dest = os.path.join(folder, *rel.split("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "wb") as f:
            f.write(data)
        n += 1
    return n


def ecr_password() -> str:
    import base64

    url = os.environ.get("GPUOPS_ECR_ENDPOINT") or f"https://api.ecr.{_region()}.amazonaws.com/"
    body = b"{}"
    req = _signed_request(
        "POST",
        url,
        "ecr",
        _region(),
        body=body,
        headers={
            "content-type": "application/x-amz-json-1.1",
            "x-amz-target": "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
        },
    )
    with urllib.request.urlopen(req, timeout=_TIMEOUT) as r:
        doc = json.loads(r.read())
    token = base64.b64decode(doc["authorizationData"][0]["authorizationToken"]).decode()
    return token.split(":", 1)[1]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "spot-action":
        notice = imds_get("spot/instance-action")
        if notice is None:
            return 3
        print(notice)
        return 0
    if cmd == "put":
        s3_put(args[0], args[1])
        return 0
    if cmd in {"get", "cat"}:
        data = s3_get(args[0])
        if data is None:
            return 3
        if cmd == "cat":
            sys.stdout.buffer.write(data)
        else:
            with open(args[1], "wb") as f:
                f.write(data)
        return 0
    if cmd == "sync-up":
        print(sync_up(args[0], args[1]))
        return 0
    if cmd == "sync-down":
        print(sync_down(args[0], args[1]))
        return 0
    if cmd == "ecr-password":
        sys.stdout.write(ecr_password())
        return 0
    print(f"gpuops-agent: unknown command {cmd!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
