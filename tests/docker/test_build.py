"""Real image builds with the Docker Engine: self-check, non-root user, no secret in a layer, no-op."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request

import pytest

from gpuops.envs import load_environment
from gpuops.envs.build import BuildOptions, build_image
from tests.conftest import REPO
from tests.infra.docker_engine import WHEELHOUSE, build_env_vars

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_selfcheck_reports_the_framework_build(pytorch_cpu_image):
    sc = pytorch_cpu_image.selfcheck
    assert sc["ok"] is True, sc
    assert sc["framework"] == "pytorch"
    assert sc["version"] == "2.13.0+cpu"  # the wheel from the wheelhouse, not PyPI's CUDA build
    assert sc["cuda_build"] is None and sc["cudnn_build"] is None and sc["cuda_available"] is False
    # (x @ x.T).sum() for x = [[0,1,2],[3,4,5]] = 5 + 14 + 14 + 50
    assert sc["cpu_op"] == 83.0


def test_labels_and_non_root_user(docker_client, pytorch_cpu_image):
    img = docker_client.images.get(pytorch_cpu_image.tag)
    labels = img.labels
    assert labels["org.gpuops.spec_hash"] == pytorch_cpu_image.spec_hash
    assert pytorch_cpu_image.tag == f"gpuops/pytorch-cpu:{pytorch_cpu_image.spec_hash[:12]}"
    assert labels["org.gpuops.framework"] == "pytorch" and labels["org.gpuops.framework_version"] == "2.13.0"
    assert labels["org.gpuops.cuda"] == "none" and labels["org.gpuops.cudnn"] == "none"
    assert labels["org.gpuops.kb_version"] not in ("", "unknown")
    assert img.attrs["Config"]["User"] == "gpuops"
    out = docker_client.containers.run(img.id, ["sh", "-c", "id -u; gpuops --version; pip --version"],
                                       remove=True, network_mode="none").decode()
    uid, version, pip = out.splitlines()[:3]
    assert uid == "1000"
    assert version == f"gpuops {labels['org.gpuops.version']}"
    assert "/opt/venv/" in pip


def _image_files(docker_client, tag):
    """(layer, path, bytes) for every regular file of every layer of the image (docker save)."""
    stream = docker_client.images.get(tag).save(named=True)
    raw = io.BytesIO(b"".join(stream))
    with tarfile.open(fileobj=raw) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            data = outer.extractfile(member).read()
            if member.name.endswith("layer.tar") or data[257:262] == b"ustar":
                with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                    for f in layer.getmembers():
                        if f.isfile():
                            yield member.name, f.name, layer.extractfile(f).read()
            else:
                yield "(image)", member.name, data


def test_no_ca_or_secret_in_any_layer(docker_client, pytorch_cpu_image, build_ca):
    _bundle, canary = build_ca
    tag = pytorch_cpu_image.tag
    # 1. History: no layer's command carries the certificate.
    history = docker_client.api.history(tag)
    assert history, "no history"
    for h in history:
        created_by = h.get("CreatedBy") or ""
        assert canary.decode() not in created_by
        assert "BEGIN CERTIFICATE" not in created_by
    # 2. The one-time URL in the RUN step's build arg is dead: the server stopped with the build.
    urls = [w for h in history for w in (h.get("CreatedBy") or "").split() if "GPUOPS_BUILD_URL=http" in w]
    for u in urls:
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(u.split("=", 1)[1] + "/ca.crt", timeout=5)
    # 3. Config: no CA path or credential in the environment.
    env = docker_client.images.get(tag).attrs["Config"]["Env"]
    for e in env:
        key = e.split("=", 1)[0]
        assert not any(s in key.upper() for s in ("SECRET", "TOKEN", "PASSWORD", "CERT", "AWS_")), e
    # 4. Every file of every layer: the canary certificate (from --ca-cert) is nowhere.
    n_files = 0
    for layer, path, data in _image_files(docker_client, tag):
        n_files += 1
        assert canary not in data, f"CA from --ca-cert found in {layer}:{path}"
        assert not path.endswith("gpuops-ca.crt"), f"{layer}:{path}"
    assert n_files > 1000  # the scan saw the whole image (Python, torch), not an empty archive


def test_rebuild_unchanged_is_a_noop(docker_client, pytorch_cpu_image, base_image, build_ca):
    spec = load_environment("pytorch-cpu", REPO / "environments")
    opts = BuildOptions(base_image=base_image, wheelhouse=WHEELHOUSE, ca_cert=build_ca[0])
    first = build_image(spec, opts, client=docker_client)
    if first.tag == pytorch_cpu_image.tag:  # unless the gpuops sources changed since the fixture built it
        assert first.cached and first.image_id == pytorch_cpu_image.image_id
    t0 = time.monotonic()
    again = build_image(spec, opts, client=docker_client)
    assert time.monotonic() - t0 < 2.0
    assert again.cached and again.image_id == first.image_id and again.tag == first.tag
    # The CLI the user types: also a no-op, in under 2 s including interpreter start-up.
    env = {**os.environ, **build_env_vars(base_image, build_ca[0])}
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "gpuops", "build", "pytorch-cpu", "--base-image", base_image,
         "--wheelhouse", str(WHEELHOUSE), "--ca-cert", str(build_ca[0]), "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    wall = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["cached"] is True and doc["tag"] == first.tag
    assert wall < 2.0, f"no-op build took {wall:.2f} s"


def test_images_lists_the_build_with_its_selfcheck(pytorch_cpu_image):
    res = subprocess.run([sys.executable, "-m", "gpuops", "images", "--json"], cwd=REPO,
                         capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert res.returncode == 0, res.stderr
    rows = {r["tag"]: r for r in json.loads(res.stdout)}
    row = rows[pytorch_cpu_image.tag]
    assert row["env"] == "pytorch-cpu" and row["framework"] == "pytorch" and row["cuda"] == "none"
    assert row["selfcheck"]["ok"] is True and row["selfcheck"]["version"] == "2.13.0+cpu"
