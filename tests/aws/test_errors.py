"""Each AWS failure a user can act on becomes one clear message with what to do.

The errors are real AWS error responses (the documented XML bodies, with AWS's HTTP status)
handed to botocore by an event hook in place of the network reply, so botocore's own parsing
and retry path runs; moto cannot produce quota or capacity errors by itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpuops.errors import UsageError
from gpuops.launch import build_request
from gpuops.targets.base import AwsOptions
from tests.aws.conftest import REGION, ec2_error_xml, inject_error, sts_error_xml

pytestmark = pytest.mark.aws

CASES = [
    (
        "VcpuLimitExceeded",
        400,
        "You have requested more vCPU capacity than your current vCPU limit of 0 allows for the "
        "instance bucket that the specified instance type belongs to. Please visit "
        "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit.",
        "vCPU quota",
        "Service Quotas",
    ),
    (
        "InsufficientInstanceCapacity",
        500,
        "We currently do not have sufficient g5.xlarge capacity in the Availability Zone you "
        "requested (us-east-1a).",
        "no free capacity",
        "another --region",
    ),
    (
        "MaxSpotInstanceCountExceeded",
        400,
        "Max spot instance count exceeded",
        "spot instance quota",
        "without --spot",
    ),
]


def _launch(session: Any, spec: Path, uri: str, spot: bool) -> Any:
    from gpuops.targets.aws import AwsTarget

    req = build_request(spec=spec, tracking_uri=uri, smoke=True,
                        options=AwsOptions(instance_type="g5.xlarge", region=REGION, spot=spot, max_hours=1))
    return AwsTarget(session=session).launch_job(req, yes=True)


@pytest.mark.parametrize(("code", "status", "aws_message", "says", "todo"), CASES, ids=[c[0] for c in CASES])
def test_quota_and_capacity_errors(
    code, status, aws_message, says, todo, dlami, sr_spec, mlflow_server
) -> None:
    import boto3
    from mlflow.tracking import MlflowClient

    session = boto3.Session(region_name=REGION)
    hits = inject_error(session, "before-send.ec2.RunInstances", status, ec2_error_xml(code, aws_message))
    with pytest.raises(UsageError) as err:
        _launch(session, sr_spec, mlflow_server.url, spot=code.startswith("MaxSpot"))
    text = str(err.value)
    assert says in text and code in text and todo in text
    assert len(text.splitlines()) == 2  # the message, and one hint line
    assert len(hits) == 1  # no blind retry of a launch
    # the MLflow run created for the launch does not stay RUNNING
    runs = MlflowClient(tracking_uri=mlflow_server.url).search_runs(
        [e.experiment_id for e in MlflowClient(tracking_uri=mlflow_server.url).search_experiments()],
        filter_string="tags.`gpuops.target` = 'aws'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert runs[0].info.status == "FAILED"


def test_missing_credentials(dlami, sr_spec, mlflow_server, monkeypatch) -> None:
    import boto3

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(UsageError) as err:
        _launch(boto3.Session(region_name=REGION), sr_spec, mlflow_server.url, spot=False)
    assert "no AWS credentials found" in str(err.value) and "aws configure" in str(err.value)


def test_expired_credentials(dlami, sr_spec, mlflow_server) -> None:
    import boto3

    session = boto3.Session(region_name=REGION)
    inject_error(
        session,
        "before-send.sts.GetCallerIdentity",
        403,
        sts_error_xml("ExpiredToken", "The security token included in the request is expired"),
    )
    with pytest.raises(UsageError) as err:
        _launch(session, sr_spec, mlflow_server.url, spot=False)
    assert "expired or invalid (ExpiredToken)" in str(err.value) and "aws sso login" in str(err.value)


def test_cli_renders_one_line_and_exit_2(aws_env, monkeypatch) -> None:
    from typer.testing import CliRunner

    from gpuops.cli.main import app

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    res = CliRunner().invoke(app, ["ps", "--region", REGION, "--no-color"])
    assert res.exit_code == 2
    assert res.output.startswith("error: no AWS credentials found")
