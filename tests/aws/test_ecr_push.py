"""``gpuops.cloud.ecr.push_image`` end to end: moto's ECR gives the repository and the login token, a
real registry (Debian's docker-registry with htpasswd auth) takes the push from the Docker Engine.

The one redirection: ECR repository URIs name ``<account>.dkr.ecr.<region>.amazonaws.com``, which
does not resolve here, so the ECR client's parsed responses get that host replaced by the local
registry's (a botocore ``after-call`` hook, the way a DNS entry would point elsewhere). Everything
else (repository creation, token decoding, tag, push with the token as credentials) is the real path.
"""

from __future__ import annotations

import io
import json
import secrets
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from pathlib import Path
from typing import Any

import pytest

from tests.aws.conftest import REGION
from tests.conftest import require
from tests.infra.docker_engine import REGISTRY_BIN, start_registry

pytestmark = [pytest.mark.aws, pytest.mark.docker]

REPO_NAME = "gpuops-test/ecr-push"


def _tiny_image(docker_client: Any) -> str:
    """A one-file image made here (nothing to pull), tagged like ``gpuops/<env>:<hash>``."""
    tag = secrets.token_hex(6)
    payload = f"gpuops ecr push test {tag}\n".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    docker_client.api.import_image_from_data(buf.getvalue(), repository=REPO_NAME, tag=tag)
    return f"{REPO_NAME}:{tag}"


def _get(url: str, auth: tuple[str, str] | None, accept: str | None = None) -> tuple[int, bytes]:
    headers = {"Accept": accept} if accept else {}
    if auth is not None:
        headers["Authorization"] = "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def test_push_to_ecr_uses_the_ecr_login_token(aws_env: str, docker_client: Any, tmp_path: Path) -> None:
    import boto3

    from gpuops.cloud.ecr import push_image, registry_auth

    require(REGISTRY_BIN.is_file(), f"{REGISTRY_BIN} missing (bash scripts/test-deps.sh)")
    ecr = boto3.client("ecr", region_name=REGION)
    login = registry_auth(ecr)  # what moto's GetAuthorizationToken hands out
    creds = (login["username"], login["password"])
    reg = start_registry(tmp_path / "registry", htpasswd=creds)
    ecr_host = urllib.parse.urlparse(login["registry"]).netloc

    def to_local_registry(parsed: dict[str, Any], **_: Any) -> None:
        for repo in [parsed.get("repository"), *parsed.get("repositories", [])]:
            if repo:
                repo["repositoryUri"] = repo["repositoryUri"].replace(ecr_host, reg.host, 1)

    ecr.meta.events.register("after-call.ecr.CreateRepository", to_local_registry)
    ecr.meta.events.register("after-call.ecr.DescribeRepositories", to_local_registry)
    local = None
    try:
        local = _tiny_image(docker_client)
        # Without the token the registry refuses: the push below gets in with ECR's credentials only.
        assert _get(f"{reg.url}/v2/", None)[0] == 401
        remote = push_image(docker_client, ecr, local)
        tag = local.rsplit(":", 1)[1]
        assert remote == f"{reg.host}/{REPO_NAME}:{tag}"
        # moto holds the repository push_image created (scan on push), under its ECR URI.
        raw = boto3.client("ecr", region_name=REGION).describe_repositories(repositoryNames=[REPO_NAME])
        repo = raw["repositories"][0]
        assert repo["repositoryUri"] == f"{ecr_host}/{REPO_NAME}"
        assert repo["imageScanningConfiguration"]["scanOnPush"] is True
        # The registry serves the tag, and its manifest is the local image (config blob = image ID).
        status, body = _get(f"{reg.url}/v2/{REPO_NAME}/tags/list", creds)
        assert status == 200 and tag in json.loads(body)["tags"]
        status, body = _get(f"{reg.url}/v2/{REPO_NAME}/manifests/{tag}", creds,
                            "application/vnd.docker.distribution.manifest.v2+json, "
                            "application/vnd.oci.image.manifest.v1+json")
        assert status == 200
        assert json.loads(body)["config"]["digest"] == docker_client.images.get(local).id
    finally:
        try:  # the registry goes even when the engine (or the image) is gone
            if local is not None:
                docker_client.images.remove(docker_client.images.get(local).id, force=True)
        finally:
            reg.stop()
