"""ECR: make sure a repository exists, push a local image to it.

Images built by ``gpuops build`` are tagged ``gpuops/<env>:<content hash>``; in ECR they become
``<account>.dkr.ecr.<region>.amazonaws.com/gpuops/<env>:<content hash>``. The registry password
from ``GetAuthorizationToken`` goes to the Docker Engine in the push request only; it is never
stored or logged.
"""

from __future__ import annotations

import base64
from typing import Any

from gpuops.errors import ExternalError, UsageError


def has_registry(image: str) -> bool:
    """True when an image reference names a registry host (``host.domain/...``, ``host:port/...``)."""
    first = image.split("/", 1)[0]
    return "/" in image and ("." in first or ":" in first or first == "localhost")


def split_ref(image: str) -> tuple[str, str]:
    """(repository, tag) of a reference without a digest; tag defaults to ``latest``."""
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = image.rsplit(":", 1)
        return repo, tag
    return image, "latest"


def ensure_repository(ecr: Any, name: str) -> str:
    """The repository's URI, creating the repository (scan on push) when needed."""
    from botocore.exceptions import ClientError

    try:
        repo = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") != "RepositoryNotFoundException":
            raise
        repo = ecr.create_repository(
            repositoryName=name,
            imageScanningConfiguration={"scanOnPush": True},
            imageTagMutability="MUTABLE",
        )["repository"]
    return str(repo["repositoryUri"])


def registry_auth(ecr: Any) -> dict[str, str]:
    data = ecr.get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    return {"username": user, "password": password, "registry": data["proxyEndpoint"]}


def find_local_image(docker_client: Any, env: str) -> str:
    """The newest local ``gpuops/<env>:<hash>`` image."""
    images = docker_client.images.list(name=f"gpuops/{env}")
    tagged = [
        (img.attrs.get("Created", ""), t)
        for img in images
        for t in img.tags
        if t.startswith(f"gpuops/{env}:")
    ]
    if not tagged:
        raise UsageError(
            f"no local image for environment {env!r}",
            hint=f"build it first: gpuops build {env}, or pass --image REGISTRY/IMAGE:TAG",
        )
    return max(tagged)[1]


def push_image(docker_client: Any, ecr: Any, local_image: str) -> str:
    """Push ``local_image`` to ECR (same repository name and tag); the remote reference."""
    repo_name, tag = split_ref(local_image)
    uri = ensure_repository(ecr, repo_name)
    auth = registry_auth(ecr)
    import docker.errors

    try:
        image = docker_client.images.get(local_image)
        image.tag(uri, tag=tag)
        events = docker_client.images.push(
            uri,
            tag=tag,
            stream=True,
            decode=True,
            auth_config={"username": auth["username"], "password": auth["password"]},
        )
        for line in events:
            if isinstance(line, dict) and line.get("error"):
                raise ExternalError(f"pushing {local_image} to {uri}: {line['error']}")
    except docker.errors.DockerException as e:
        raise ExternalError(f"pushing {local_image} to {uri}: {e}") from None
    return f"{uri}:{tag}"
