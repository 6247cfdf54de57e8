"""The user-data bootstrap, rendered and then executed for real.

The script that moto received in RunInstances is read back and run with bash (on this machine,
and in the pytorch-cpu image when the Docker Engine is at hand) with ``shutdown``/``poweroff``/
``systemd-run`` replaced on PATH by recorders, the instance metadata service replaced by a local
IMDSv2 stub, and S3 being moto's server. It runs the real smoke experiment into the MLflow run the
launch created, uploads its log, status and checkpoints, and ``gpuops logs`` prints the log.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gpuops.cloud.bootstrap import USER_DATA_LIMIT, BootstrapConfig, render_user_data
from gpuops.errors import UsageError
from gpuops.launch import build_request
from gpuops.targets.base import AwsOptions
from tests.aws.conftest import REGION, SENTINEL_SECRET, Imds
from tests.conftest import REPO, require

pytestmark = pytest.mark.aws

STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "{calls}"
"""


def _cfg(**kw: Any) -> BootstrapConfig:
    base = {
        "run_id": "abc123",
        "region": REGION,
        "bucket": "b",
        "prefix": "gpuops/runs/abc123",
        "spec_name": "x.yaml",
        "tracking_uri": "http://10.0.0.5:5000",
        "max_hours": 1.5,
    }
    return BootstrapConfig(**{**base, **kw})


def test_render_quotes_values_and_stays_under_the_limit(tmp_path: Path) -> None:
    nasty = "model.name=a'b\"c $(touch /tmp/pwned) `id`"
    script = render_user_data(_cfg(extra_args=["--set", nasty], spec_name="my spec.yaml"))
    assert len(script.encode()) < USER_DATA_LIMIT
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    # the array holds the override verbatim: bash gives back exactly what went in
    decl = next(ln for ln in script.splitlines() if ln.startswith("GPUOPS_EXTRA="))
    out = subprocess.run(
        ["bash", "-c", decl + '; printf "%s\\n" "${GPUOPS_EXTRA[@]}"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines() == ["--set", nasty]
    assert "GPUOPS_MAX_MINUTES=90" in script
    with pytest.raises(ValueError, match="without user name or password"):
        _cfg(tracking_uri="https://user:secret@mlflow.example.com")
    with pytest.raises(UsageError, match="16384-byte"):
        render_user_data(_cfg(extra_args=["--set", "x=" + "y" * USER_DATA_LIMIT]))


def _stubs(tmp_path: Path) -> tuple[Path, Path]:
    bindir = tmp_path / "stubs"
    bindir.mkdir()
    calls = tmp_path / "power-calls.txt"
    for name in ("shutdown", "poweroff", "systemd-run"):
        p = bindir / name
        p.write_text(STUB.format(calls=calls))
        p.chmod(0o755)
    return bindir, calls


def _launch_and_fetch_user_data(
    sr_spec: Path, tracking: str, home: Path, imds: Imds, endpoint: str, spot: bool = False
) -> tuple[Any, str]:
    import boto3

    from gpuops.targets.aws import AwsTarget

    target = AwsTarget(session=boto3.Session(region_name=REGION))
    target.s3_endpoint = endpoint
    target.imds_endpoint = imds.url
    target.bootstrap_overrides = {"home": str(home), "sync_seconds": 5, "grace_seconds": 1}
    req = build_request(spec=sr_spec, tracking_uri=tracking, smoke=True,
                        options=AwsOptions(instance_type="g4dn.xlarge", region=REGION, spot=spot,
                                           max_hours=1))
    job = target.launch_job(req, yes=True)
    ec2 = boto3.client("ec2", region_name=REGION)
    ud = ec2.describe_instance_attribute(InstanceId=job.job_id, Attribute="userData")["UserData"]["Value"]
    return job, base64.b64decode(ud).decode()


def _kill_deadline_watchdog(home: Path) -> None:
    pid_file = home / "deadline.pid"
    if pid_file.is_file():
        with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
            os.killpg(int(pid_file.read_text().strip()), signal.SIGTERM)


def _run_on_host(script: str, tmp_path: Path, bindir: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "user-data.sh"
    path.write_text(script)
    venv_bin = Path(sys.executable).parent
    env = {
        "PATH": f"{bindir}:{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "GPUOPS_AWS_ALLOW_LOCAL_TRACKING": "1",
    }
    return subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=420)


def _check_gpuops_run_ready() -> None:
    res = subprocess.run([sys.executable, "-m", "gpuops", "run", "--help"], capture_output=True, text=True)
    require(res.returncode == 0 and "--run-id" in res.stdout, "`gpuops run --run-id` (helper run) not ready")


def test_bootstrap_runs_the_smoke_experiment_and_uploads(
    aws_env, dlami, sr_spec, mlflow_server, imds, tmp_path
) -> None:
    import boto3
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from gpuops.cli.main import app

    _check_gpuops_run_ready()
    bindir, calls = _stubs(tmp_path)
    home = tmp_path / "instance"
    job, script = _launch_and_fetch_user_data(sr_spec, mlflow_server.url, home, imds, aws_env)
    try:
        res = _run_on_host(script, tmp_path, bindir)
    finally:
        _kill_deadline_watchdog(home)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    power = calls.read_text().splitlines()
    assert power[0].startswith("shutdown -P +60")  # the deadline, armed first
    assert power[1].startswith("systemd-run --unit=gpuops-deadline --on-active=62min poweroff")
    assert power[-1].startswith("shutdown -P now")  # and off at the end

    s3 = boto3.client("s3", region_name=REGION)
    prefix = f"gpuops/runs/{job.run_id}"
    status = json.loads(
        s3.get_object(Bucket=job.details["bucket"], Key=f"{prefix}/status.json")["Body"].read()
    )
    assert status["state"] == "succeeded" and status["exit_code"] == 0
    log = s3.get_object(Bucket=job.details["bucket"], Key=f"{prefix}/bootstrap.log")["Body"].read().decode()
    assert f"gpuops: run {job.run_id}" in log and "experiment exited with status 0" in log
    assert SENTINEL_SECRET not in log and imds.role_secret not in log
    # what the trainer put in $GPUOPS_OUTPUT_DIR came up as the run's artifacts/
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=job.details["bucket"], Prefix=prefix)["Contents"]}
    assert {f"{prefix}/artifacts/{name}" for name in ("model/state_dict.pt", "summary.json")} <= keys

    # every metadata read carried the IMDSv2 session token (the stub answers 401 otherwise)
    assert any(r == "GET /latest/meta-data/spot/instance-action" for r in imds.requests)

    run = MlflowClient(tracking_uri=mlflow_server.url).get_run(job.run_id)
    assert run.info.status == "FINISHED" and "val/psnr" in run.data.metrics
    assert run.data.tags["gpuops.target"] == "aws"
    assert SENTINEL_SECRET not in json.dumps({**run.data.params, **run.data.tags})

    out = CliRunner().invoke(app, ["logs", job.run_id, "--region", REGION])
    assert out.exit_code == 0 and f"gpuops: run {job.run_id}" in out.stdout
    assert "experiment exited with status 0" in out.stdout


def test_spot_notice_checkpoints_and_marks_interrupted(
    aws_env, dlami, sr_spec, mlflow_server, imds, tmp_path
) -> None:
    import boto3

    _check_gpuops_run_ready()
    bindir, _calls = _stubs(tmp_path)
    home = tmp_path / "instance"
    job, script = _launch_and_fetch_user_data(sr_spec, mlflow_server.url, home, imds, aws_env, spot=True)
    imds.spot_action = {"action": "terminate", "time": "2026-11-23T10:00:00Z"}
    try:
        res = _run_on_host(script, tmp_path, bindir)
    finally:
        _kill_deadline_watchdog(home)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (home / "checkpoints" / "INTERRUPT").is_file()  # the trainer's cue to checkpoint now
    s3 = boto3.client("s3", region_name=REGION)
    prefix = f"gpuops/runs/{job.run_id}"
    status = json.loads(
        s3.get_object(Bucket=job.details["bucket"], Key=f"{prefix}/status.json")["Body"].read()
    )
    assert status["state"] == "interrupted"
    log = s3.get_object(Bucket=job.details["bucket"], Key=f"{prefix}/bootstrap.log")["Body"].read().decode()
    assert 'spot interruption notice: {"action": "terminate"' in log
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=job.details["bucket"], Prefix=prefix)["Contents"]]
    assert f"{prefix}/checkpoints/INTERRUPT" in keys  # the checkpoint folder went to S3
    # the trainer saw the notice: it checkpointed into the folder at its next iteration and stopped,
    # the run KILLED (resumable), and the bootstrap still reports the run as interrupted
    assert f"{prefix}/checkpoints/last.pt" in keys and "experiment exited with status 130" in log
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=mlflow_server.url).get_run(job.run_id)
    assert run.info.status == "KILLED" and run.data.tags["gpuops.interrupted_at"] == "1"
    summary = json.loads(
        s3.get_object(Bucket=job.details["bucket"], Key=f"{prefix}/artifacts/summary.json")["Body"].read()
    )
    assert summary["status"] == "KILLED" and summary["interrupted_at"] == 1


def test_agent_sync_round_trip_with_instance_role_credentials(aws_env, imds, tmp_path) -> None:
    import boto3

    boto3.client("s3", region_name=REGION).create_bucket(Bucket="agent-test")
    src = tmp_path / "ckpt"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "model.pt").write_bytes(os.urandom(3000))
    (src / "step.txt").write_text("12")
    env = {
        "PATH": "/usr/bin:/bin",
        "GPUOPS_REGION": REGION,
        "GPUOPS_BUCKET": "agent-test",
        "GPUOPS_S3_ENDPOINT": aws_env,
        "GPUOPS_IMDS": imds.url,
    }
    agent = str(REPO / "gpuops" / "cloud" / "agent.py")
    up = subprocess.run(
        ["python3", agent, "sync-up", str(src), "gpuops/runs/r1/checkpoints"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert up.returncode == 0 and up.stdout.strip() == "2", up.stderr
    again = subprocess.run(
        ["python3", agent, "sync-up", str(src), "gpuops/runs/r1/checkpoints"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.stdout.strip() == "0"  # unchanged files are not sent twice
    dst = tmp_path / "restored"
    down = subprocess.run(
        ["python3", agent, "sync-down", "gpuops/runs/r1/checkpoints", str(dst)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert down.returncode == 0 and down.stdout.strip() == "2"
    assert (dst / "sub" / "model.pt").read_bytes() == (src / "sub" / "model.pt").read_bytes()
    assert "GET /latest/meta-data/iam/security-credentials/gpuops-instance" in imds.requests
    missing = subprocess.run(["python3", agent, "get", "gpuops/none", str(tmp_path / "x")], env=env)
    assert missing.returncode == 3


def test_bootstrap_in_the_pytorch_cpu_image(
    request, aws_env, dlami, sr_spec, mlflow_server, imds, tmp_path
) -> None:
    """The same user data, executed as root inside the image helper "docker" builds."""
    import boto3

    try:
        client = request.getfixturevalue("docker_client")
        image = request.getfixturevalue("pytorch_cpu_image")
    except pytest.FixtureLookupError:
        require(False, "docker fixtures (tests/infra/docker_engine.py: pytorch_cpu_image) not available")
        return
    bindir, calls = _stubs(tmp_path)
    home = tmp_path / "instance"
    job, script = _launch_and_fetch_user_data(sr_spec, mlflow_server.url, home, imds, aws_env)
    (tmp_path / "user-data.sh").write_text(script)
    os.chmod(tmp_path, 0o777)
    image_tag = image.tag
    env = dict(e.split("=", 1) for e in client.images.get(image_tag).attrs["Config"].get("Env") or [])
    image_path = env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    out = client.containers.run(
        image_tag,
        ["bash", str(tmp_path / "user-data.sh")],
        user="root",
        network_mode="host",
        remove=True,
        environment={"PATH": f"{bindir}:{image_path}", "GPUOPS_AWS_ALLOW_LOCAL_TRACKING": "1"},
        volumes={str(tmp_path): {"bind": str(tmp_path), "mode": "rw"}},
        stdout=True,
        stderr=True,
    )
    assert b"experiment exited with status 0" in out, out[-3000:]
    s3 = boto3.client("s3", region_name=REGION)
    status = json.loads(
        s3.get_object(Bucket=job.details["bucket"], Key=f"gpuops/runs/{job.run_id}/status.json")[
            "Body"
        ].read()
    )
    assert status["state"] == "succeeded"
    assert calls.read_text().splitlines()[0].startswith("shutdown -P +60")
