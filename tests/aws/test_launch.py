"""The aws target against moto's server: plan, RunInstances, ps / logs / stop, S3, ECR, MLflow."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from gpuops.errors import GpuopsError, UsageError
from gpuops.launch import build_request
from gpuops.targets.base import AwsOptions, LaunchRequest
from tests.aws.conftest import REGION, SENTINEL_KEY_ID, SENTINEL_SECRET
from tests.conftest import REPO

pytestmark = pytest.mark.aws


def _target(session: Any = None) -> Any:
    import boto3

    from gpuops.targets.aws import AwsTarget

    return AwsTarget(session=session or boto3.Session(region_name=REGION))


def _request(spec: Path, uri: str, **options: Any) -> LaunchRequest:
    opts = {"instance_type": "g5.xlarge", "max_hours": 2, "region": REGION, **options}
    return build_request(spec=spec, tracking_uri=uri, smoke=True, overrides=["train.lr=0.0005"],
                         options=AwsOptions(**opts))


def _record_calls(session: Any) -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []

    def hook(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.name, params))

    session.events.register("provide-client-params.ec2.*", hook)
    return calls


def test_plan_is_read_only_and_prices_from_the_data_file(dlami, sr_spec, mlflow_server) -> None:
    import boto3

    from gpuops.cloud.prices import price_table

    session = boto3.Session(region_name=REGION)
    calls = _record_calls(session)
    plan = _target(session).aws_plan(_request(sr_spec, mlflow_server.url, spot=True, max_hours=3))
    hourly = price_table().hourly("g5.xlarge", REGION)
    assert plan.ami == dlami and plan.ami_source.startswith("ssm:/aws/service/deeplearning/")
    assert plan.instance_type == "g5.xlarge" and plan.region == REGION and plan.spot
    assert plan.hourly_price == hourly and plan.total_cost == pytest.approx(round(hourly * 3, 2))
    assert plan.bucket == "gpuops-123456789012-us-east-1"
    assert plan.data_bundle  # the SR data folders travel with the spec
    assert all(name.startswith("Describe") for name, _ in calls)  # nothing was created
    # --ami wins over the SSM lookup
    assert _target().aws_plan(_request(sr_spec, mlflow_server.url, ami="ami-12c6146b")).ami_source == "--ami"


def test_launch_refuses_without_yes_and_respects_the_confirm_hook(dlami, sr_spec, mlflow_server) -> None:
    import boto3

    target = _target()
    with pytest.raises(UsageError, match="--yes"):
        target.launch_job(_request(sr_spec, mlflow_server.url))
    seen = []
    target.confirm_hook = lambda plan: seen.append(plan.total_cost) or False
    with pytest.raises(GpuopsError, match="cancelled"):
        target.launch_job(_request(sr_spec, mlflow_server.url))
    assert seen and seen[0] is not None
    ec2 = boto3.client("ec2", region_name=REGION)
    live = ec2.describe_instances(
        Filters=[
            {"Name": "tag:gpuops:managed", "Values": ["true"]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
    )
    assert all(i["Tags"] for r in live["Reservations"] for i in r["Instances"])  # none untagged


def _launch(sr_spec: Path, uri: str, **options: Any) -> tuple[Any, Any, list[tuple[str, dict[str, Any]]]]:
    import boto3

    session = boto3.Session(region_name=REGION)
    calls = _record_calls(session)
    target = _target(session)
    job = target.launch_job(_request(sr_spec, uri, **options), yes=True)
    return target, job, calls


def test_run_instances_request_read_back(dlami, sr_spec, mlflow_server) -> None:
    import boto3
    from mlflow.tracking import MlflowClient

    target, job, calls = _launch(sr_spec, mlflow_server.url, spot=True)
    writes = [name for name, _ in calls if not name.startswith("Describe")]
    assert writes == ["RunInstances"]  # tags, deadline and shutdown behaviour in ONE atomic call
    sent = dict(calls)["RunInstances"]
    assert sent["InstanceMarketOptions"]["MarketType"] == "spot"
    assert sent["InstanceMarketOptions"]["SpotOptions"]["InstanceInterruptionBehavior"] == "terminate"

    ec2 = boto3.client("ec2", region_name=REGION)
    inst = ec2.describe_instances(InstanceIds=[job.job_id])["Reservations"][0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert inst["ImageId"] == dlami and inst["InstanceType"] == "g5.xlarge"
    assert inst.get("InstanceLifecycle") == "spot"
    assert tags["gpuops:run-id"] == job.run_id and tags["gpuops:managed"] == "true"
    assert tags["gpuops:price-per-hour"] == "1.006" and tags["gpuops:deadline"].endswith("Z")
    assert inst["IamInstanceProfile"]["Arn"].endswith("/gpuops-instance")
    attr = ec2.describe_instance_attribute(
        InstanceId=job.job_id, Attribute="instanceInitiatedShutdownBehavior"
    )
    assert attr["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    ud = ec2.describe_instance_attribute(InstanceId=job.job_id, Attribute="userData")["UserData"]["Value"]
    script = base64.b64decode(ud).decode()
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    first_cmd = next(
        ln
        for ln in script.splitlines()
        if ln.strip() and not ln.startswith(("#", "set ", "GPUOPS_", "mkdir"))
    )
    assert first_cmd.startswith('shutdown -P "+${GPUOPS_MAX_MINUTES}"') and "GPUOPS_MAX_MINUTES=120" in script
    assert f"GPUOPS_RUN_ID={job.run_id}" in script and "GPUOPS_SPEC=resolved.json" in script

    # inputs bundle in S3: the spec, the resolved experiment (what the instance trains: --smoke and
    # --set included, data paths inside the bundle) and its data, nothing else
    s3 = boto3.client("s3", region_name=REGION)
    blob = s3.get_object(Bucket=job.details["bucket"], Key=f"gpuops/runs/{job.run_id}/inputs.tar.gz")[
        "Body"
    ].read()
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        names = tar.getnames()
        resolved = json.loads(tar.extractfile("resolved.json").read())  # type: ignore[union-attr]
    assert sr_spec.name in names and any(n.startswith("data/") for n in names)
    assert resolved["smoke"] and resolved["overrides"] == ["train.lr=0.0005"]
    assert resolved["spec"]["train"]["lr"] == 0.0005
    assert {resolved["spec"]["data"]["train"], resolved["spec"]["data"]["eval"]} <= set(names)
    pab = s3.get_public_access_block(Bucket=job.details["bucket"])["PublicAccessBlockConfiguration"]
    assert all(pab.values())

    # the MLflow run was created first, tagged with where it runs
    run = MlflowClient(tracking_uri=mlflow_server.url).get_run(job.run_id)
    assert run.data.tags["gpuops.target"] == "aws" and run.data.tags["aws.instance_type"] == "g5.xlarge"

    # credentials: the user's keys are nowhere the instance or MLflow can see
    for secret in (SENTINEL_SECRET, SENTINEL_KEY_ID):
        assert secret not in script
        assert secret not in json.dumps({**run.data.params, **run.data.tags})
        for key in (o["Key"] for o in s3.list_objects_v2(Bucket=job.details["bucket"])["Contents"]):
            assert secret.encode() not in s3.get_object(Bucket=job.details["bucket"], Key=key)["Body"].read()
    target.stop(job)


def test_ps_and_stop_through_the_cli(dlami, sr_spec, mlflow_server) -> None:
    from typer.testing import CliRunner

    from gpuops.cli.main import app

    _, job, _ = _launch(sr_spec, mlflow_server.url)
    runner = CliRunner()
    res = runner.invoke(app, ["ps", "--json", "--region", REGION])
    assert res.exit_code == 0, res.output
    rows = {r["run_id"]: r for r in json.loads(res.stdout)["instances"]}
    row = rows[job.run_id]
    assert row["instance_id"] == job.job_id and row["state"] == "running" and not row["spot"]
    assert row["cost_so_far"] is not None and row["cost_so_far"] >= 0 and row["uptime_hours"] >= 0

    res = runner.invoke(app, ["stop", job.run_id, "--region", REGION, "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["terminated"] == [job.job_id]
    res = runner.invoke(app, ["ps", "--json", "--region", REGION])
    assert job.run_id not in {r["run_id"] for r in json.loads(res.stdout)["instances"]}
    res = runner.invoke(app, ["stop", job.run_id, "--region", REGION])
    assert res.exit_code == 0 and "no live instance" in res.stdout


def test_logs_reads_new_bytes_only_and_follow_ends_with_the_run(dlami, sr_spec, mlflow_server) -> None:
    import boto3
    from typer.testing import CliRunner

    from gpuops.cli.main import app

    target, job, _ = _launch(sr_spec, mlflow_server.url)
    s3 = boto3.client("s3", region_name=REGION)
    prefix = f"gpuops/runs/{job.run_id}"
    res = CliRunner().invoke(app, ["logs", job.run_id, "--region", REGION])
    assert res.exit_code == 2 and "no log" in res.output

    # what the instance's agent uploads: the whole log so far, then a longer one, then status
    s3.put_object(Bucket=job.details["bucket"], Key=f"{prefix}/bootstrap.log", Body=b"line 1\nline 2\n")
    got = list(target.logs(job))
    assert got == ["line 1", "line 2"]
    s3.put_object(
        Bucket=job.details["bucket"], Key=f"{prefix}/bootstrap.log", Body=b"line 1\nline 2\nline 3\n"
    )
    s3.put_object(
        Bucket=job.details["bucket"],
        Key=f"{prefix}/status.json",
        Body=json.dumps({"state": "succeeded", "exit_code": 0}).encode(),
    )
    assert list(target.logs(job, follow=True, poll_seconds=0.1)) == ["line 1", "line 2", "line 3"]
    assert target.status(job).value == "succeeded"
    target.stop(job)


def test_resume_relaunches_into_the_same_run(dlami, sr_spec, mlflow_server) -> None:
    import boto3

    target, first, _ = _launch(sr_spec, mlflow_server.url, spot=True)
    target.stop(first)
    # as `gpuops run --resume RUN_ID --target aws` calls it: no spec file, only the run id
    req = build_request(resume=first.run_id[:10], tracking_uri=mlflow_server.url,
                        options=AwsOptions(spot=True, region=REGION, max_hours=1))
    plan = target.aws_plan(req)
    assert (
        plan.resume
        and plan.smoke
        and plan.overrides == ["train.lr=0.0005"]
        and plan.spec_name == "resolved.json"
    )
    second = target.launch_plan(plan, req)
    assert second.run_id == first.run_id and second.job_id != first.job_id
    ec2 = boto3.client("ec2", region_name=REGION)
    ud = ec2.describe_instance_attribute(InstanceId=second.job_id, Attribute="userData")["UserData"]["Value"]
    script = base64.b64decode(ud).decode()
    assert "GPUOPS_RESUME=1" in script and "GPUOPS_SPEC=resolved.json" in script
    with pytest.raises(UsageError, match="no MLflow run whose id starts with 0123abcd"):
        build_request(resume="0123abcd", tracking_uri=mlflow_server.url, options=AwsOptions(region=REGION))
    target.stop(second)


def test_ecr_repository_created_once_and_auth_decoded(aws_env) -> None:
    import boto3

    from gpuops.cloud.ecr import ensure_repository, has_registry, registry_auth, split_ref

    ecr = boto3.client("ecr", region_name=REGION)
    uri = ensure_repository(ecr, "gpuops/pytorch-cpu")
    assert ensure_repository(ecr, "gpuops/pytorch-cpu") == uri
    assert uri.endswith(".amazonaws.com/gpuops/pytorch-cpu") and has_registry(uri + ":abc")
    assert len(ecr.describe_repositories()["repositories"]) >= 1
    auth = registry_auth(ecr)
    assert auth["username"] == "AWS" and auth["password"]
    assert split_ref("gpuops/pytorch-cpu:0123abcd") == ("gpuops/pytorch-cpu", "0123abcd")
    assert not has_registry("gpuops/pytorch-cpu:0123abcd")


def test_local_tracking_store_is_refused(dlami, sr_spec, monkeypatch) -> None:
    monkeypatch.delenv("GPUOPS_AWS_ALLOW_LOCAL_TRACKING")
    with pytest.raises(UsageError, match="cannot"):
        _target().aws_plan(_request(sr_spec, "sqlite:///mlflow.db"))
    with pytest.raises(UsageError, match="loopback"):
        _target().aws_plan(_request(sr_spec, "http://127.0.0.1:5000"))
    with pytest.raises(UsageError, match="user name or password"):
        _target().aws_plan(_request(sr_spec, "https://me:pw@mlflow.example.com"))


def test_an_aws_run_lands_in_the_specs_experiment_with_the_common_tags(dlami, sr_spec, mlflow_server,
                                                                       tmp_path) -> None:
    from tests.run.conftest import check_one_path, with_experiment

    spec = with_experiment(sr_spec, tmp_path, "one-path-exp")
    req = build_request(spec=spec, tracking_uri=mlflow_server.url, smoke=True,
                        overrides=["resources.device=cpu"],
                        options=AwsOptions(instance_type="g5.xlarge", region=REGION, max_hours=1))
    target = _target()
    job = target.launch_job(req, yes=True)
    try:
        tags = check_one_path(mlflow_server.url, job.run_id, "one-path-exp", "aws", "resources.device=cpu")
        assert tags["aws.instance_type"] == "g5.xlarge"
    finally:
        target.stop(job)


def test_a_script_task_is_refused_before_anything_is_created(dlami, mlflow_server) -> None:
    spec = REPO / "experiments" / "torch_script.yaml"
    with pytest.raises(UsageError, match="task: script does not run on --target aws"):
        _target().aws_plan(build_request(spec=spec, tracking_uri=mlflow_server.url, smoke=True,
                                         options=AwsOptions(region=REGION)))
