"""``gpuops run SPEC --target aws`` through the CLI, against moto's server: the plan is shown, nothing
is launched without confirmation, and ``--yes`` launches exactly one tagged instance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.aws.conftest import MOTO_AMI, REGION

pytestmark = pytest.mark.aws


def _instance_ids() -> set[str]:
    import boto3

    ec2 = boto3.client("ec2", region_name=REGION)
    return {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}


def _run(*args: str) -> Any:
    from typer.testing import CliRunner

    from gpuops.cli.main import app

    # CliRunner's stdin is not a terminal: the non-interactive case
    return CliRunner().invoke(app, ["run", *args, "--no-color"], env={"COLUMNS": "200"})


def test_plan_is_shown_and_nothing_launches_without_yes(dlami: str, sr_spec: Path) -> None:
    from gpuops.cloud.prices import price_table

    before = _instance_ids()
    # the plan never talks to the tracking server: nothing listens on this port, on purpose
    common = [str(sr_spec), "--target", "aws", "--smoke", "--tracking-uri", "http://127.0.0.1:9",
              "--instance-type", "g5.xlarge", "--spot", "--max-hours", "2", "--region", REGION]
    res = _run(*common)
    assert res.exit_code == 2, res.output
    hourly = price_table().hourly("g5.xlarge", REGION)
    assert hourly is not None
    for shown in ("g5.xlarge in us-east-1 (spot)", dlami, f"${hourly:.4f}/h", "2 h",
                  f"at most ${round(hourly * 2, 2):.2f}", f"as of {price_table().as_of}"):
        assert shown in res.stdout, shown
    assert "--yes" in res.stderr and "not a terminal" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 2  # one line, and its hint

    res = _run(*common, "--json")
    assert res.exit_code == 2
    doc = json.loads(res.stdout)  # still exactly one JSON document
    assert doc["launched"] is False and "--yes" in doc["error"]
    plan = doc["plan"]
    assert plan["instance_type"] == "g5.xlarge" and plan["spot"] and plan["ami"] == dlami
    assert plan["total_cost"] == pytest.approx(round(hourly * 2, 2))
    prices = plan["price_data"]
    assert prices["as_of"] == price_table().as_of and "aws.amazon.com" in prices["source"]
    assert _instance_ids() == before  # describe_instances: nothing was created

    res = _run(str(sr_spec), "--ami", MOTO_AMI)  # aws options with the local target: refused up front
    assert res.exit_code == 2 and "--ami" in res.stderr


def test_yes_launches_one_tagged_instance_with_the_given_options(dlami: str, sr_spec: Path,
                                                                 mlflow_server: Any) -> None:
    import boto3

    before = _instance_ids()
    res = _run(str(sr_spec), "--target", "aws", "--smoke", "--tracking-uri", mlflow_server.url,
               "--max-hours", "1", "--region", REGION, "--ami", MOTO_AMI, "--bucket", "gpuops-cli-test",
               "--yes", "--detach", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["launched"] is True and doc["state"] == "launched"
    assert doc["plan"]["ami_source"] == "--ami" and doc["plan"]["bucket"] == "gpuops-cli-test"

    new = _instance_ids() - before
    assert new == {doc["job_id"]}  # exactly one instance
    ec2 = boto3.client("ec2", region_name=REGION)
    inst = ec2.describe_instances(InstanceIds=[doc["job_id"]])["Reservations"][0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert inst["ImageId"] == MOTO_AMI and inst["InstanceType"] == "g5.xlarge"
    assert tags["gpuops:run-id"] == doc["run_id"] and tags["gpuops:managed"] == "true"
    assert tags["gpuops:bucket"] == "gpuops-cli-test" and tags["gpuops:spot"] == "false"
    assert tags["gpuops:deadline"] == doc["details"]["deadline"]
    ec2.terminate_instances(InstanceIds=[doc["job_id"]])
