"""moto's server mode on 127.0.0.1 (real boto3 HTTP calls), an IMDSv2 stub, and helpers.

``moto_endpoint`` (session) starts ``moto.server.ThreadedMotoServer`` on a free port and seeds what
AWS itself publishes: the Deep Learning AMI's public SSM parameter (moto refuses ``/aws/...`` names
through the API, as AWS does, so it goes into moto's backend directly) pointing at one of moto's
AMIs. ``aws_env`` points boto3's standard configuration (``AWS_ENDPOINT_URL``, region, keys) at it,
with a sentinel secret key that the tests look for wherever it must not be.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, require

REGION = "us-east-1"
SENTINEL_SECRET = "SENTINELsecretKEY0123456789abcdefGHIJKLMN"  # must never leave this process
SENTINEL_KEY_ID = "AKIASENTINELKEYID0001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        require(False, "moto[server] is not installed")
        raise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        yield url
    finally:
        server.stop()


def seed_dlami_parameter(ami_id: str, region: str = REGION) -> None:
    """What AWS publishes: the DLAMI's SSM parameter (seeded into moto's backend, account 123456789012)."""
    from moto.ssm.models import Parameter, ssm_backends

    from gpuops.cloud.ami import DLAMI_PARAMETER

    backend = ssm_backends["123456789012"][region]
    backend._parameters[DLAMI_PARAMETER] = [
        Parameter(
            account_id="123456789012",
            name=DLAMI_PARAMETER,
            value=ami_id,
            parameter_type="String",
            description=None,
            allowed_pattern=None,
            keyid=None,
            last_modified_date=None,
            version=1,
            data_type="aws:ec2:image",
        )
    ]


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """boto3's standard configuration pointed at moto; returns the endpoint."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", SENTINEL_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SENTINEL_SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("GPUOPS_AWS_ALLOW_LOCAL_TRACKING", "1")
    return moto_endpoint


MOTO_AMI = "ami-12c6146b"  # one of the public AMIs moto ships


@pytest.fixture
def dlami(aws_env: str) -> str:
    import boto3

    ec2 = boto3.client("ec2", region_name=REGION)
    ami = ec2.describe_images(ImageIds=[MOTO_AMI])["Images"][0]["ImageId"]
    seed_dlami_parameter(ami)
    return str(ami)


@pytest.fixture
def sr_spec(tmp_path: Path) -> Path:
    """A copy of the shipped SR experiment with its data folder beside it (as in experiments/)."""
    import shutil

    src = REPO / "experiments" / "srcnn_y.yaml"
    data = REPO / "experiments" / "data"
    require(
        src.is_file() and data.is_dir(), "experiments/srcnn_y.yaml and experiments/data (helpers run/srlib)"
    )
    folder = tmp_path / "exp"
    folder.mkdir()
    shutil.copy(src, folder / src.name)
    (folder / "data").symlink_to(data.resolve(), target_is_directory=True)
    return folder / src.name


# -- IMDSv2 stub ----------------------------------------------------------------------------------
class Imds:
    """A local stand-in for the instance metadata service (IMDSv2 token, role credentials, spot)."""

    ROLE = "gpuops-instance"

    def __init__(self) -> None:
        self.token = "imds-token-" + "x" * 20
        self.spot_action: dict[str, str] | None = None
        self.role_key = "ASIAINSTANCEROLE0001"
        self.role_secret = "instance-role-secret-not-the-user-one"
        self.requests: list[str] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _send(self, code: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                imds.requests.append("PUT " + self.path)
                if self.path == "/latest/api/token" and self.headers.get(
                    "X-aws-ec2-metadata-token-ttl-seconds"
                ):
                    self._send(200, imds.token)
                else:
                    self._send(400)

            def do_GET(self) -> None:
                imds.requests.append("GET " + self.path)
                if self.headers.get("X-aws-ec2-metadata-token") != imds.token:
                    self._send(401)  # IMDSv2 only: a request without the session token is refused
                    return
                p = self.path.removeprefix("/latest/meta-data/")
                if p == "spot/instance-action":
                    if imds.spot_action is None:
                        self._send(404)
                    else:
                        self._send(200, json.dumps(imds.spot_action))
                elif p == "iam/security-credentials/":
                    self._send(200, imds.ROLE)
                elif p == f"iam/security-credentials/{imds.ROLE}":
                    self._send(
                        200,
                        json.dumps(
                            {
                                "Code": "Success",
                                "AccessKeyId": imds.role_key,
                                "SecretAccessKey": imds.role_secret,
                                "Token": "role-session-token",
                                "Expiration": "2099-01-01T00:00:00Z",
                            }
                        ),
                    )
                else:
                    self._send(404)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Imds:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def imds() -> Iterator[Imds]:
    with Imds() as stub:
        yield stub


# -- injecting real AWS error responses ----------------------------------------------------------
class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def ec2_error_xml(code: str, message: str) -> bytes:
    """The body EC2's query API returns for an error (its documented ``Response/Errors/Error`` shape)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{code}</Code><Message>{message}</Message></Error></Errors>"
        "<RequestID>5d1f3a2b-7c9e-4f60-8a1b-2c3d4e5f6a7b</RequestID></Response>"
    ).encode()


def sts_error_xml(code: str, message: str) -> bytes:
    return (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
        f"<Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>0b1c2d3e-4f5a-6b7c-8d9e-0f1a2b3c4d5e</RequestId></ErrorResponse>"
    ).encode()


def inject_error(session: Any, event: str, status: int, body: bytes) -> list[str]:
    """Answer every request matching ``event`` (e.g. ``before-send.ec2.RunInstances``) with this
    HTTP response; botocore then parses it on its normal path. Returns the list of hits."""
    from botocore.awsrequest import AWSResponse

    hits: list[str] = []

    def handler(request: Any, **_: Any) -> AWSResponse:
        hits.append(request.url)
        return AWSResponse(request.url, status, {"Content-Type": "text/xml"}, _Raw(body))

    session.events.register(event, handler)
    return hits
