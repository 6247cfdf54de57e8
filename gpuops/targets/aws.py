"""``--target aws``: run an experiment on an EC2 GPU instance that always shuts itself down.

Three steps, so that the CLI can show the plan and ask before anything costs money:

* ``plan(request) -> LaunchPlan`` (``aws_plan`` for the ``AwsPlan`` alone): read-only (looks up the
  AMI and the account); instance type, region, AMI, hourly price, max hours, total cost, spot or not,
  and the consent question;
* the caller shows it and confirms (``--yes``, or ``AwsTarget.confirm_hook``);
* ``launch(plan) -> AwsRun`` (``launch_plan(aws_plan) -> Job`` underneath): bucket, image (ECR push
  when local), instance profile, the MLflow run (``prepare_run``, as every target), the inputs bundle
  (the resolved experiment as ``resolved.json``, its data folders under ``data/``), then ONE
  ``RunInstances`` call that carries the tags (``TagSpecifications``), the deadline (user data) and
  ``InstanceInitiatedShutdownBehavior=terminate`` together: an interrupted launch cannot leave an
  untagged instance without deadline. The instance runs ``gpuops run --resolved resolved.json``:
  exactly the experiment validated here.

``launch_job(request)`` does all three; without ``yes`` and without a confirm hook it refuses.
``status`` / ``logs`` / ``stop`` / ``list_jobs`` work by the ``gpuops:run-id`` tag and the run's S3
prefix. Credentials come from boto3's standard chain and go nowhere else: not into user data
(the instance uses its instance profile), not into MLflow, not into the S3 log.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from gpuops.cloud.errors import aws_errors
from gpuops.errors import GpuopsError, UsageError
from gpuops.targets.base import (
    AwsOptions,
    Job,
    JobState,
    LaunchPlan,
    LaunchRequest,
    RunEvent,
    RunOutcome,
)

TAG_MANAGED = "gpuops:managed"
TAG_RUN = "gpuops:run-id"
TAG_EXPERIMENT = "gpuops:experiment"
TAG_DEADLINE = "gpuops:deadline"
TAG_BUCKET = "gpuops:bucket"
TAG_PRICE = "gpuops:price-per-hour"
TAG_SPOT = "gpuops:spot"

DEFAULT_INSTANCE_TYPE = "g5.xlarge"
DEFAULT_REGION = "us-east-1"
DEFAULT_MAX_HOURS = 4.0
DEFAULT_PROFILE = "gpuops-instance"
_LIVE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]


class AwsPlan(BaseModel):
    """Everything a launch will do, and what it may cost. Shown before confirmation."""

    model_config = ConfigDict(extra="forbid")

    spec_path: str
    experiment: str
    spec_name: str
    region: str
    instance_type: str
    ami: str
    ami_source: str
    spot: bool
    max_hours: float
    hourly_price: float | None  # on-demand USD/h (spot: the cap)
    total_cost: float | None  # hourly_price * max_hours: the most this run can cost
    price_source: str
    image: str | None  # what the instance pulls (None: the experiment runs on the AMI directly)
    push_from: str | None  # local image pushed to ECR at launch
    bucket: str
    instance_profile: str
    tracking_uri: str
    run_id: str | None  # set when resuming
    resume: bool
    smoke: bool
    overrides: list[str]
    data_bundle: dict[str, str]  # resolved data folder -> path inside the inputs bundle

    def summary_rows(self) -> list[tuple[str, str]]:
        price = "no price on file" if self.hourly_price is None else f"${self.hourly_price:.4f}/h"
        total = "unknown" if self.total_cost is None else f"at most ${self.total_cost:.2f}"
        return [
            ("experiment", f"{self.experiment} ({self.spec_path})" + (" --smoke" if self.smoke else "")),
            ("resume run" if self.resume else "MLflow", self.run_id if self.resume else self.tracking_uri),
            (
                "instance",
                f"{self.instance_type} in {self.region}" + (" (spot)" if self.spot else " (on-demand)"),
            ),
            ("AMI", f"{self.ami} ({self.ami_source})"),
            ("image", self.image or "none (runs on the AMI)")
            if not self.push_from
            else ("image", f"push {self.push_from} to ECR"),
            ("price", price + (" on-demand; spot is at most this" if self.spot else "")),
            ("deadline", f"{self.max_hours:g} h, enforced on the instance"),
            ("total cost", total + f" (prices: {self.price_source})"),
            ("logs", f"s3://{self.bucket}/gpuops/runs/<run id>/"),
        ]


BUNDLE_SPEC = "resolved.json"  # the resolved experiment inside the inputs bundle


def _options(request: LaunchRequest) -> AwsOptions:
    if not isinstance(request.options, AwsOptions):
        raise UsageError(f"the aws target was given {request.options.kind} options")
    return request.options


def _check_tracking_uri(uri: str | None) -> str:
    if not uri:
        raise UsageError(
            "the aws target needs an MLflow tracking server the instance can reach",
            hint="pass --tracking-uri http://HOST:5000 (or set MLFLOW_TRACKING_URI)",
        )
    parts = urlsplit(uri)
    if parts.scheme not in {"http", "https", "databricks"}:
        raise UsageError(
            f"tracking URI {uri!r} is local to this machine; the instance cannot log to it",
            hint="run an MLflow server the instance can reach and pass --tracking-uri http://HOST:PORT",
        )
    if parts.username or parts.password:
        raise UsageError(
            "the tracking URI carries a user name or password; credentials never go to the instance",
            hint="use a server reachable without credentials from the instance's network",
        )
    if parts.hostname in {"localhost", "127.0.0.1", "::1"} and not os.environ.get(
        "GPUOPS_AWS_ALLOW_LOCAL_TRACKING"
    ):
        raise UsageError(
            f"tracking URI {uri!r} points at this machine's loopback; the instance cannot reach it",
            hint="use the server's public or VPC address",
        )
    return uri


def bundle_resolved(resolved: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The resolved experiment as the instance gets it (each data folder at ``data/<field>``,
    relative to the bundle) and the map of local folders to their bundle paths."""
    doc = resolved.to_dict()
    spec_data = doc["spec"].get("data")
    bundle: dict[str, str] = {}
    if isinstance(spec_data, dict):
        for name, value in list(spec_data.items()):
            if isinstance(value, str) and Path(value).is_absolute() and Path(value).is_dir():
                rel = f"data/{name}"
                bundle[str(Path(value).resolve())] = rel
                spec_data[name] = rel
    return doc, bundle


class AwsTarget:
    name = "aws"

    def __init__(self, session: Any = None) -> None:
        self._session = session  # a boto3.Session; tests pass one with event hooks
        self.confirm_hook: Callable[[AwsPlan], bool] | None = None
        self.s3_endpoint = ""  # S3-compatible endpoint for the instance (tests); empty = AWS
        self.imds_endpoint = "http://169.254.169.254"
        self.bootstrap_overrides: dict[str, Any] = {}

    # -- clients -------------------------------------------------------------------------------
    def session(self, region: str | None = None) -> Any:
        if self._session is None:
            import boto3

            self._session = boto3.Session(region_name=region) if region else boto3.Session()
        return self._session

    def client(self, service: str, region: str, **config: Any) -> Any:
        from botocore.config import Config

        retries = config.pop("retries", {"mode": "standard", "max_attempts": 3})
        return self.session(region).client(
            service, region_name=region, config=Config(retries=retries, **config)
        )

    def _region(self, request_region: object | None) -> str:
        if request_region:
            return str(request_region)
        return str(self.session().region_name or DEFAULT_REGION)

    # -- plan ----------------------------------------------------------------------------------
    def plan(self, request: LaunchRequest) -> LaunchPlan:
        plan = self.aws_plan(request)
        import re

        from gpuops.cloud.prices import price_table

        prices = price_table()
        url = re.search(r"https?://\S+", prices.source)
        where = f", {url.group(0)}" if url else ""
        rows = [*plan.summary_rows(),
                ("price data", f"{prices.currency} on-demand list prices as of {prices.as_of}{where}")]
        cost = "an unknown amount" if plan.total_cost is None else f"at most ${plan.total_cost:.2f}"
        question = f"Launch {plan.instance_type} in {plan.region} for up to {plan.max_hours:g} h ({cost})?"
        from gpuops.tracking.tracker import redact_uri

        price_data = {"as_of": prices.as_of, "currency": prices.currency, "source": prices.source}
        doc = {**plan.model_dump(mode="json"), "tracking_uri": redact_uri(plan.tracking_uri),
               "price_data": price_data}
        return LaunchPlan(request, rows=rows, consent=question, detail=plan, doc=doc)

    def aws_plan(self, request: LaunchRequest) -> AwsPlan:
        from gpuops.cloud.ami import resolve_ami
        from gpuops.cloud.ecr import has_registry
        from gpuops.cloud.prices import price_table
        from gpuops.cloud.storage import default_bucket, read_launch

        opts = _options(request)
        if request.resolved.spec.task == "script":
            raise UsageError("task: script does not run on --target aws yet: the instance would need the "
                             "script, its environment's lock and a supervisor outside the image",
                             hint="run it locally, in its image (--target docker), or on Ray (--target ray)")
        region = self._region(opts.region)
        instance_type = opts.instance_type
        max_hours = float(opts.max_hours)
        if not 0 < max_hours <= 168:
            raise UsageError(f"--max-hours {max_hours:g}: expected more than 0 and at most 168 (a week)")
        tracking_uri = _check_tracking_uri(request.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))

        image, push_from = opts.image, None
        if image and not has_registry(image):
            push_from, image = image, None
        elif not image and opts.env:
            push_from = _find_env_image(opts.env)

        table = price_table()
        hourly = table.hourly(instance_type, region)
        with aws_errors(region):
            ami, ami_source = resolve_ami(self.client("ssm", region), opts.ami)
            bucket = opts.bucket
            if not bucket:
                account = self.client("sts", region).get_caller_identity()["Account"]
                bucket = default_bucket(account, region)
            # a run id that an earlier aws launch left in S3 is a resume: same inputs, same run
            prior = (read_launch(self.client("s3", region), str(bucket), request.run_id)
                     if request.run_id else None)
        resolved = request.resolved
        if request.resume and prior is None:
            raise UsageError(f"run {request.run_id} was not launched on AWS in {region}: "
                             "nothing to resume there",
                             hint="resume it on the target it ran on, or give --region")
        _, bundle = bundle_resolved(resolved)
        return AwsPlan(
            spec_path=resolved.source,
            experiment=resolved.experiment_name,
            spec_name=str(prior.get("spec_name") or BUNDLE_SPEC) if prior else BUNDLE_SPEC,
            region=region,
            instance_type=instance_type,
            ami=ami,
            ami_source=ami_source,
            spot=opts.spot,
            max_hours=max_hours,
            hourly_price=hourly,
            total_cost=None if hourly is None else round(hourly * max_hours, 2),
            price_source=f"{table.as_of}, gpuops/cloud/ec2_prices.yaml",
            image=image,
            push_from=push_from,
            bucket=str(bucket),
            instance_profile=opts.instance_profile,
            tracking_uri=tracking_uri,
            run_id=request.run_id,
            resume=prior is not None,
            smoke=resolved.smoke,
            overrides=resolved.public_overrides(),
            data_bundle=bundle,
        )

    # -- launch --------------------------------------------------------------------------------
    def launch(self, plan: LaunchPlan) -> AwsRun:
        """Launch a plan the caller has shown and had confirmed."""
        job = self.launch_plan(plan.detail, plan.request)
        return AwsRun(self, job, plan.detail.tracking_uri, plan.detail.experiment)

    def launch_job(self, request: LaunchRequest, *, yes: bool = False) -> Job:
        """Plan and launch in one call (scripts, tests): ``yes``, or a confirm hook that says yes."""
        plan = self.aws_plan(request)
        if not yes:
            if self.confirm_hook is None:
                cost = "an unknown amount" if plan.total_cost is None else f"up to ${plan.total_cost:.2f}"
                raise UsageError(
                    f"launching {plan.instance_type} in {plan.region} for at most {plan.max_hours:g} h "
                    f"costs {cost}; confirm with --yes"
                )
            if not self.confirm_hook(plan):
                raise GpuopsError("launch cancelled; nothing was started")
        return self.launch_plan(plan, request)

    def launch_plan(self, plan: AwsPlan, request: LaunchRequest) -> Job:
        from gpuops.cloud.bootstrap import BootstrapConfig, render_user_data
        from gpuops.cloud.iam import ensure_instance_profile
        from gpuops.cloud.storage import build_inputs_bundle, ensure_bucket, run_prefix, write_launch

        region = plan.region
        with aws_errors(region):
            s3 = self.client("s3", region)
            ensure_bucket(s3, plan.bucket, region)
            image = plan.image or ""
            if plan.push_from:
                image = self._push(plan.push_from, region)
            ensure_instance_profile(self.client("iam", region), plan.instance_profile, plan.bucket)

            run_id = self._mlflow_run(plan, image, request)
            if not plan.resume:  # a resumed run reuses the inputs its first launch uploaded
                import json

                doc, _ = bundle_resolved(request.resolved)
                s3.put_object(
                    Bucket=plan.bucket,
                    Key=f"{run_prefix(run_id)}/inputs.tar.gz",
                    Body=build_inputs_bundle(Path(plan.spec_path), plan.data_bundle,
                                             extra={BUNDLE_SPEC: json.dumps(doc).encode()}),
                )
                launch_doc = {
                    "experiment": plan.experiment,
                    "spec_name": plan.spec_name,
                    "smoke": plan.smoke,
                    "overrides": plan.overrides,
                    "region": region,
                }
                write_launch(s3, plan.bucket, run_id, launch_doc)

            extra: list[str] = []  # the resolved experiment carries --smoke and every --set
            cfg = BootstrapConfig(
                run_id=run_id,
                region=region,
                bucket=plan.bucket,
                prefix=run_prefix(run_id),
                spec_name=plan.spec_name,
                tracking_uri=plan.tracking_uri,
                max_hours=plan.max_hours,
                image=image,
                resume=plan.resume,
                extra_args=extra,
                s3_endpoint=self.s3_endpoint,
                imds_endpoint=self.imds_endpoint,
                **self.bootstrap_overrides,
            )
            user_data = render_user_data(cfg)
            deadline = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=cfg.max_minutes)
            tags = {
                "Name": f"gpuops-{plan.experiment}-{run_id[:8]}",
                TAG_MANAGED: "true",
                TAG_RUN: run_id,
                TAG_EXPERIMENT: plan.experiment,
                TAG_DEADLINE: deadline.strftime("%Y-%m-%dT%H:%M:%SZ"),
                TAG_BUCKET: plan.bucket,
                TAG_SPOT: str(plan.spot).lower(),
            }
            if plan.hourly_price is not None:
                tags[TAG_PRICE] = f"{plan.hourly_price}"
            params: dict[str, Any] = {
                "ImageId": plan.ami,
                "InstanceType": plan.instance_type,
                "MinCount": 1,
                "MaxCount": 1,
                "UserData": user_data,
                "InstanceInitiatedShutdownBehavior": "terminate",
                "IamInstanceProfile": {"Name": plan.instance_profile},
                "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
                "TagSpecifications": [
                    {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]},
                    {
                        "ResourceType": "volume",
                        "Tags": [{"Key": TAG_RUN, "Value": run_id}, {"Key": TAG_MANAGED, "Value": "true"}],
                    },
                ],
                # idempotency: a retried request with this token returns the same instance
                "ClientToken": f"{run_id}-{uuid.uuid4().hex[:16]}",
            }
            if plan.spot:
                params["InstanceMarketOptions"] = {
                    "MarketType": "spot",
                    "SpotOptions": {
                        "SpotInstanceType": "one-time",
                        "InstanceInterruptionBehavior": "terminate",
                    },
                }
            ec2 = self.client("ec2", region, retries={"mode": "standard", "total_max_attempts": 1})
            try:
                inst = ec2.run_instances(**params)["Instances"][0]
            except BaseException:
                self._mark_run(plan.tracking_uri, run_id, "FAILED", plan.resume)
                raise
        return Job(
            target=self.name,
            job_id=inst["InstanceId"],
            run_id=run_id,
            details={
                "region": region,
                "bucket": plan.bucket,
                "instance_type": plan.instance_type,
                "spot": plan.spot,
                "image": image or None,
                "deadline": tags[TAG_DEADLINE],
                "log": f"s3://{plan.bucket}/{run_prefix(run_id)}/bootstrap.log",
            },
        )

    def _push(self, local_image: str, region: str) -> str:
        import docker

        from gpuops.cloud.ecr import push_image

        return push_image(docker.from_env(), self.client("ecr", region), local_image)

    def _mlflow_run(self, plan: AwsPlan, image: str, request: LaunchRequest) -> str:
        from gpuops.tracking.runs import prepare_run
        from gpuops.tracking.tracker import Tracker

        tags = {
            **request.tags,
            "aws.region": plan.region,
            "aws.instance_type": plan.instance_type,
            "aws.spot": str(plan.spot).lower(),
            "aws.ami": plan.ami,
            "aws.bucket": plan.bucket,
            "aws.max_hours": f"{plan.max_hours:g}",
            "aws.resumed": str(plan.resume).lower(),
        }
        if image:
            tags["env.image"] = image
        return prepare_run(Tracker(plan.tracking_uri), request.resolved, target="aws", run_id=plan.run_id,
                           parent_run_id=request.parent_run_id, tags=tags)

    @staticmethod
    def _mark_run(tracking_uri: str, run_id: str, status: str, resume: bool) -> None:
        try:
            from gpuops.tracking.tracker import mark_if_running

            mark_if_running(tracking_uri, run_id, status, "the instance could not be launched")
        except Exception:  # the launch error matters more than the bookkeeping
            pass

    # -- find instances ------------------------------------------------------------------------
    def _instances(
        self, region: str, run_id: str | None = None, live_only: bool = True
    ) -> list[dict[str, Any]]:
        filters = [{"Name": f"tag:{TAG_MANAGED}", "Values": ["true"]}]
        if run_id:
            filters.append({"Name": f"tag:{TAG_RUN}", "Values": [run_id]})
        if live_only:
            filters.append(
                {
                    "Name": "instance-state-name",
                    "Values": ["pending", "running", "shutting-down", "stopping", "stopped"],
                }
            )
        out: list[dict[str, Any]] = []
        with aws_errors(region):
            pages = self.client("ec2", region).get_paginator("describe_instances").paginate(Filters=filters)
            for page in pages:
                for res in page.get("Reservations", []):
                    out += res.get("Instances", [])
        return out

    def list_jobs(self, region: str | None = None, all_states: bool = False) -> list[dict[str, Any]]:
        """This tool's instances (by tag) with state, uptime and cost so far (for ``gpuops ps``)."""
        region = self._region(region)
        now = dt.datetime.now(dt.UTC)
        rows = []
        for inst in self._instances(region, live_only=not all_states):
            tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
            launched = inst.get("LaunchTime")
            state = inst["State"]["Name"]
            uptime_h = None
            if isinstance(launched, dt.datetime) and state in {
                "pending",
                "running",
                "shutting-down",
                "stopping",
            }:
                uptime_h = max(0.0, (now - launched).total_seconds() / 3600)
            price = float(tags[TAG_PRICE]) if TAG_PRICE in tags else None
            rows.append(
                {
                    "run_id": tags.get(TAG_RUN),
                    "instance_id": inst["InstanceId"],
                    "experiment": tags.get(TAG_EXPERIMENT),
                    "instance_type": inst.get("InstanceType"),
                    "region": region,
                    "state": state,
                    "spot": inst.get("InstanceLifecycle") == "spot" or tags.get(TAG_SPOT) == "true",
                    "launched": launched.isoformat() if isinstance(launched, dt.datetime) else None,
                    "uptime_hours": None if uptime_h is None else round(uptime_h, 3),
                    "cost_so_far": None if uptime_h is None or price is None else round(uptime_h * price, 2),
                    "deadline": tags.get(TAG_DEADLINE),
                    "bucket": tags.get(TAG_BUCKET),
                }
            )
        return sorted(rows, key=lambda r: r["launched"] or "")

    def _job_region_bucket(self, job: Job) -> tuple[str, str | None]:
        region = self._region(job.details.get("region"))
        bucket = job.details.get("bucket")
        return region, str(bucket) if bucket else None

    def _bucket_for(self, region: str, run_id: str) -> str:
        from gpuops.cloud.storage import default_bucket

        for inst in self._instances(region, run_id, live_only=False):
            tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
            if tags.get(TAG_BUCKET):
                return tags[TAG_BUCKET]
        with aws_errors(region):
            account = self.client("sts", region).get_caller_identity()["Account"]
        return default_bucket(account, region)

    # -- status / logs / stop ------------------------------------------------------------------
    def status(self, job: Job) -> JobState:
        from gpuops.cloud.storage import read_status

        region, bucket = self._job_region_bucket(job)
        run_id = job.run_id or job.job_id
        bucket = bucket or self._bucket_for(region, run_id)
        with aws_errors(region):
            st = read_status(self.client("s3", region), bucket, run_id)
        state = (st or {}).get("state")
        if state == "succeeded":
            return JobState.SUCCEEDED
        if state in {"failed", "interrupted"}:
            return JobState.FAILED
        live = [i["State"]["Name"] for i in self._instances(region, run_id, live_only=False)]
        if any(s in {"pending"} for s in live):
            return JobState.PENDING
        if any(s in {"running", "shutting-down", "stopping"} for s in live):
            return JobState.RUNNING
        if live and all(s == "terminated" for s in live):
            return JobState.KILLED
        return JobState.UNKNOWN

    def logs(self, job: Job, follow: bool = False, poll_seconds: float = 10.0) -> Iterator[str]:
        """The run's log from S3, line by line; ``follow`` polls until the run has ended."""
        from gpuops.cloud.storage import read_log, read_status

        region, bucket = self._job_region_bucket(job)
        run_id = job.run_id or job.job_id
        bucket = bucket or self._bucket_for(region, run_id)
        offset = 0
        pending = b""
        with aws_errors(region):
            s3 = self.client("s3", region)
            while True:
                got = read_log(s3, bucket, run_id, offset)
                if got is None and not follow:
                    raise UsageError(
                        f"no log for run {run_id} in s3://{bucket}/ yet",
                        hint="the instance uploads its log within a minute of starting; "
                        "use --follow to wait for it",
                    )
                if got is not None:
                    chunk, offset = got
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield line.decode("utf-8", "replace")
                if not follow:
                    break
                st = read_status(s3, bucket, run_id)
                if st and st.get("state") in {"succeeded", "failed", "interrupted"}:
                    final = read_log(s3, bucket, run_id, offset)
                    if final:
                        pending += final[0]
                    break
                alive = self._instances(region, run_id, live_only=False)
                if not any(i["State"]["Name"] != "terminated" for i in alive):
                    final = read_log(s3, bucket, run_id, offset)  # gone: take what it left, and stop
                    if final:
                        pending += final[0]
                    break
                time.sleep(poll_seconds)
        for line in pending.decode("utf-8", "replace").splitlines():
            yield line

    def stop(self, job: Job) -> None:
        region, _ = self._job_region_bucket(job)
        self.stop_run(job.run_id or job.job_id, region)

    def stop_run(self, run_id: str, region: str | None = None) -> list[str]:
        """Terminate every live instance of ``run_id``; the instance ids (empty: none was live)."""
        region = self._region(region)
        ids = [i["InstanceId"] for i in self._instances(region, run_id) if i["State"]["Name"] != "terminated"]
        if ids:
            with aws_errors(region):
                self.client("ec2", region).terminate_instances(InstanceIds=ids)
        return ids


def _find_env_image(env: str) -> str:
    try:
        import docker

        client = docker.from_env()
    except Exception as e:
        raise UsageError(
            f"cannot reach the Docker Engine to find the image of environment {env!r}: {e}",
            hint="pass --image REGISTRY/IMAGE:TAG to use an image that is already in a registry",
        ) from e
    from gpuops.cloud.ecr import find_local_image

    return find_local_image(client, env)


def job_for_run(run_id: str, region: str | None = None) -> Job:
    return Job(target="aws", job_id=run_id, run_id=run_id, details={"region": region} if region else {})


class AwsRun:
    """The handle of a run on an EC2 instance: its log from S3, its state from the status S3 holds.
    Ctrl-C stops following only: the instance runs on until the run ends or its deadline."""

    def __init__(self, target: AwsTarget, job: Job, tracking_uri: str, experiment: str) -> None:
        self.target, self.job = target, job
        self.run_id = job.run_id or job.job_id
        self.tracking_uri, self.experiment = tracking_uri, experiment

    def events(self) -> Iterator[RunEvent]:
        for line in self.target.logs(self.job, follow=True):
            yield RunEvent("log", text=line)

    def logs(self, follow: bool = False) -> Iterator[str]:
        return self.target.logs(self.job, follow=follow)

    def status(self) -> JobState:
        return self.target.status(self.job)

    def outcome(self) -> str | None:
        """What the instance reported in S3: running, succeeded, failed, interrupted (or None)."""
        from gpuops.cloud.storage import read_status

        try:
            st = read_status(self.target.client("s3", str(self.job.details["region"])),
                             str(self.job.details["bucket"]), self.run_id)
        except Exception:  # only used to word the outcome
            return None
        return str(st["state"]) if st and st.get("state") else None

    def wait(self) -> RunOutcome:
        state = self.status()
        outcome = self.outcome()
        status = {JobState.SUCCEEDED: "FINISHED", JobState.FAILED: "FAILED", JobState.KILLED: "KILLED",
                  JobState.RUNNING: "RUNNING", JobState.PENDING: "RUNNING"}.get(state, "UNKNOWN")
        if outcome == "interrupted":
            status = "KILLED"
        code = 0 if state in (JobState.SUCCEEDED, JobState.RUNNING, JobState.PENDING) else 1
        return RunOutcome(status=status, exit_code=code, state=state, error=outcome)

    def stop(self, reason: str = "stopped by gpuops") -> None:
        self.target.stop(self.job)

    def interrupt(self, *, signalled: bool, reason: str) -> RunOutcome:
        return RunOutcome(status="RUNNING", exit_code=130, state=JobState.RUNNING, error="detached")

    def close(self) -> None:
        return None
