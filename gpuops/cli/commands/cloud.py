"""``gpuops ps``, ``gpuops logs RUN_ID``, ``gpuops stop RUN_ID``: the runs on AWS instances, or
(``--target ray``) the runs submitted as jobs to a Ray cluster.

Thin: parse, call ``gpuops.targets.aws.AwsTarget`` or ``gpuops.cluster.jobs``, render. boto3 and Ray
are imported only when a command runs.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gpuops.cli.app import Application, JsonOpt, NoColorOpt, QuietOpt

RegionOpt = Annotated[
    str | None,
    typer.Option("--region", help="AWS region (default: your AWS config's region, else us-east-1)."),
]


TargetOpt = Annotated[str, typer.Option("--target", help="aws (instances) or ray (jobs on a Ray cluster).")]
DashboardOpt = Annotated[
    str | None,
    typer.Option("--ray-dashboard", help="ray: the cluster's Jobs API (http://HEAD:8265; default: "
                                         "RAY_ADDRESS when it is an http address)."),
]


def _dashboard(target: str, dashboard: str | None, region: str | None) -> str | None:
    """The Jobs API address for ``--target ray``; None for aws. Options of the other target are refused."""
    import os

    from gpuops.errors import UsageError

    if target not in ("aws", "ray"):
        raise UsageError(f"--target {target}: expected aws or ray")
    if target == "aws":
        if dashboard is not None:
            raise UsageError("--ray-dashboard: only with --target ray")
        return None
    if region is not None:
        raise UsageError("--region: only with --target aws")
    url = dashboard or (os.environ.get("RAY_ADDRESS") or "")
    if not url.startswith(("http://", "https://")):
        raise UsageError("--target ray needs the cluster's Jobs API address",
                         hint="--ray-dashboard http://HEAD:8265 (or RAY_ADDRESS=http://HEAD:8265)")
    return url


def _target() -> object:
    from gpuops.targets import get_target

    return get_target("aws")


def ps(
    region: RegionOpt = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Also list terminated instances.")] = False,
    target: TargetOpt = "aws",
    dashboard: DashboardOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    """List this tool's AWS instances: run, state, uptime and cost so far.

    Finds the instances gpuops launched (tag gpuops:managed=true) in one region and shows each
    one's MLflow run id, instance type, spot or on-demand, state, uptime, cost so far (uptime
    times the hourly price recorded at launch) and the deadline after which it powers itself off.

    \b
    Example:
      gpuops ps --region us-west-2
      gpuops ps --all --json
    """
    app = Application(json_mode=json_, quiet=quiet, no_color=no_color)
    with app.guard():
        url = _dashboard(target, dashboard, region)
        if url is not None:
            from gpuops.cluster import jobs

            found = jobs.list_jobs(url)
            table = app.out.table(["run", "job", "status", "start", "end"],
                                  [[r["run_id"], r["job_id"], r["status"], _when(r["start"]), _when(r["end"])]
                                   for r in found])
            app.out.result({"jobs": found}, render=table if found else "no gpuops jobs on this cluster")
            app.exit()
        rows = _target().list_jobs(region, all_states=all_)  # type: ignore[attr-defined]
        table = app.out.table(
            ["run", "instance", "type", "market", "state", "uptime", "cost so far", "deadline"],
            [
                [
                    r["run_id"],
                    r["instance_id"],
                    r["instance_type"],
                    "spot" if r["spot"] else "on-demand",
                    r["state"],
                    "" if r["uptime_hours"] is None else f"{r['uptime_hours']:.2f} h",
                    "" if r["cost_so_far"] is None else f"${r['cost_so_far']:.2f}",
                    r["deadline"],
                ]
                for r in rows
            ],
        )
        app.out.result({"instances": rows}, render=table if rows else "no gpuops instances")
    app.exit()


def logs(
    run_id: Annotated[str, typer.Argument(help="The MLflow run id that `gpuops run --target aws` printed.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep polling until the run ends.")] = False,
    region: RegionOpt = None,
    target: TargetOpt = "aws",
    dashboard: DashboardOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    """Print the log of a run on AWS, from S3.

    The instance uploads its log (bootstrap and experiment output) to
    s3://BUCKET/gpuops/runs/RUN_ID/bootstrap.log every minute and when it ends. --follow polls it
    until the run has finished, failed or was interrupted.

    \b
    Example:
      gpuops logs 3f2a9c0d1e --follow
    """
    from gpuops.targets.aws import job_for_run

    app = Application(json_mode=json_, quiet=quiet, no_color=no_color)
    with app.guard():
        url = _dashboard(target, dashboard, region)
        if url is not None:
            from gpuops.cluster import jobs

            lines = iter(jobs.job_logs(url, run_id).splitlines())
        else:
            lines = _target().logs(job_for_run(run_id, region), follow=follow)  # type: ignore[attr-defined]
        if json_:
            app.out.json({"run_id": run_id, "lines": list(lines)})
        else:
            for line in lines:
                app.out.console.print(line, markup=False, highlight=False)
    app.exit()


def stop(
    run_id: Annotated[str, typer.Argument(help="The MLflow run id of the run to stop.")],
    region: RegionOpt = None,
    target: TargetOpt = "aws",
    dashboard: DashboardOpt = None,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="ray: the run's MLflow store, "
                                                     "where it is marked KILLED.")] = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    """Terminate the AWS instance of a run.

    Terminates every live instance tagged with this run id. The instance's disk goes with it;
    what it uploaded to S3 (log, checkpoints, artifacts) stays, so a spot run can continue with
    `gpuops run SPEC --target aws --resume RUN_ID`.

    \b
    Example:
      gpuops stop 3f2a9c0d1e --region us-west-2
    """
    app = Application(json_mode=json_, quiet=quiet, no_color=no_color)
    with app.guard():
        url = _dashboard(target, dashboard, region)
        if url is not None:
            from gpuops.cluster import jobs
            from gpuops.tracking.tracker import Tracker, resolve_tracking_uri

            uri = resolve_tracking_uri(tracking_uri)
            row = jobs.stop(url, run_id, uri)
            status = Tracker(uri).client.get_run(str(row["run_id"])).info.status
            app.out.result({"run_id": row["run_id"], "job": row, "run_status": status},
                           render=f"job {row['job_id']} {row['status']}; run {row['run_id']} {status}")
            app.exit()
        ids = _target().stop_run(run_id, region)  # type: ignore[attr-defined]
        msg = f"terminating {', '.join(ids)}" if ids else f"no live instance for run {run_id}"
        app.out.result({"run_id": run_id, "terminated": ids}, render=msg)
    app.exit()


def _when(epoch: float | None) -> str:
    import datetime as dt

    return "" if not epoch else dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def register(app: typer.Typer) -> None:
    app.command("ps")(ps)
    app.command("logs")(logs)
    app.command("stop")(stop)
