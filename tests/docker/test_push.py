"""``gpuops build --push`` against a real registry (Debian's docker-registry on 127.0.0.1).

What gpuops reports (reference, digest) is checked against what the registry itself serves through
its HTTP API, and the image is pulled back by digest with the docker SDK.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.infra.docker_engine import WHEELHOUSE, free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
])


def _gpuops_build(base_image: str, ca: Path, *extra: str, timeout: int = 300
                  ) -> subprocess.CompletedProcess[str]:
    """The CLI with the build fixture's options, so that the build itself is a no-op."""
    return subprocess.run(
        [sys.executable, "-m", "gpuops", "build", "pytorch-cpu", "--base-image", base_image,
         "--wheelhouse", str(WHEELHOUSE), "--ca-cert", str(ca), *extra],
        cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=timeout,
    )


def _get(url: str, accept: str | None = None) -> tuple[bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read(), dict(r.headers)


@pytest.fixture(scope="module")
def pushed(docker_client: Any, pytorch_cpu_image: Any, base_image: str, build_ca: tuple[Path, bytes],
           local_registry: str) -> dict[str, Any]:
    """``gpuops build pytorch-cpu --push 127.0.0.1:PORT --json``, run once for this module."""
    res = _gpuops_build(base_image, build_ca[0], "--push", local_registry, "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    return dict(json.loads(res.stdout))


def test_engine_allows_plain_http_to_loopback_registries(docker_client):
    # Why the registry needs no TLS here: dockerd's default insecure range is 127.0.0.0/8.
    cidrs = docker_client.info()["RegistryConfig"]["InsecureRegistryCIDRs"]
    assert "127.0.0.0/8" in cidrs


def test_push_reports_reference_and_digest_the_registry_serves(docker_client, pytorch_cpu_image,
                                                               local_registry, pushed):
    assert pushed["cached"] is True and pushed["tag"] == pytorch_cpu_image.tag  # no rebuild
    version = pytorch_cpu_image.tag.rsplit(":", 1)[1]
    repo = "gpuops-pytorch-cpu"
    assert pushed["pushed"]["reference"] == f"{local_registry}/{repo}:{version}"
    digest = pushed["pushed"]["digest"]
    assert digest.startswith("sha256:") and len(digest) == 71

    base = f"http://{local_registry}/v2"
    catalog = json.loads(_get(f"{base}/_catalog")[0])
    assert repo in catalog["repositories"]
    assert version in json.loads(_get(f"{base}/{repo}/tags/list")[0])["tags"]
    body, headers = _get(f"{base}/{repo}/manifests/{version}", MANIFEST_TYPES)
    assert headers["Docker-Content-Digest"] == digest
    assert "sha256:" + hashlib.sha256(body).hexdigest() == digest  # the digest is of these bytes
    manifest = json.loads(body)
    # The manifest describes the local image: its config blob is the image ID, one blob per layer.
    local = docker_client.images.get(pytorch_cpu_image.tag)
    assert manifest["config"]["digest"] == local.id == pytorch_cpu_image.image_id
    assert len(manifest["layers"]) == len(local.attrs["RootFS"]["Layers"])
    for blob in [manifest["config"], *manifest["layers"]]:
        req = urllib.request.Request(f"{base}/{repo}/blobs/{blob['digest']}", method="HEAD")
        with urllib.request.urlopen(req, timeout=30) as r:
            assert int(r.headers["Content-Length"]) == blob["size"]
    # The same manifest by digest.
    assert _get(f"{base}/{repo}/manifests/{digest}", MANIFEST_TYPES)[0] == body


def test_pull_back_by_digest(docker_client, pytorch_cpu_image, local_registry, pushed):
    reference = pushed["pushed"]["reference"]
    digest = pushed["pushed"]["digest"]
    docker_client.images.remove(reference)  # only the registry tag goes; gpuops/pytorch-cpu:<hash> stays
    remaining = docker_client.images.get(pytorch_cpu_image.tag).tags
    assert reference not in remaining
    repo = reference.rsplit(":", 1)[0]
    pulled = docker_client.images.pull(f"{repo}@{digest}")
    assert pulled.id == pytorch_cpu_image.image_id
    assert f"{repo}@{digest}" in pulled.attrs["RepoDigests"]


def test_push_again_is_idempotent_and_shown(pytorch_cpu_image, base_image, build_ca, local_registry, pushed):
    res = _gpuops_build(base_image, build_ca[0], "--push", local_registry, "--no-color")
    assert res.returncode == 0, res.stderr[-3000:]
    out = " ".join(res.stdout.split())  # rich wraps at the terminal width
    tag = out.split()[0]
    version = tag.rsplit(":", 1)[1]
    assert f"pushed: {local_registry}/gpuops-pytorch-cpu:{version} sha256:" in out
    if tag == pushed["tag"]:  # unless the gpuops sources changed since the first push (a new image)
        ref, digest = pushed["pushed"]["reference"], pushed["pushed"]["digest"]
        assert f"pushed: {ref} {digest}" in out  # same content, same digest


def _untag(docker_client, prefix: str) -> list[str]:
    gone = [t for img in docker_client.images.list() for t in img.tags if t.startswith(prefix)]
    for t in gone:
        docker_client.images.remove(t)
    return gone


def test_push_errors_are_one_line(docker_client, base_image, build_ca, local_registry, pushed):
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens there
    res = _gpuops_build(base_image, build_ca[0], "--push", nobody)
    gone = _untag(docker_client, f"{nobody}/")
    assert res.returncode == 1, res.stderr[-3000:]
    assert gone  # the tag made for the push (and only that) went
    assert f"push to {nobody}/gpuops-pytorch-cpu:" in res.stderr and "Traceback" not in res.stderr
    res = _gpuops_build(base_image, build_ca[0], "--push", f"http://{local_registry}")
    assert res.returncode == 2
    assert "not a URL" in res.stderr and "Traceback" not in res.stderr
