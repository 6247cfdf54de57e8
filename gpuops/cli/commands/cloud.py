"""``gpuops ps``, ``gpuops logs RUN_ID``, ``gpuops stop RUN_ID``: the runs on AWS instances.

Thin: parse, call ``gpuops.targets.aws.AwsTarget``, render. boto3 is imported only when a
command runs.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gpuops.cli.app import Application, JsonOpt, NoColorOpt, QuietOpt

RegionOpt = Annotated[
    str | None,
    typer.Option("--region", help="AWS region (default: your AWS config's region, else us-east-1)."),
]


def _target() -> object:
    from gpuops.targets import get_target

    return get_target("aws")


def ps(
    region: RegionOpt = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Also list terminated instances.")] = False,
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
        target = _target()
        lines = target.logs(job_for_run(run_id, region), follow=follow)  # type: ignore[attr-defined]
        if json_:
            app.out.json({"run_id": run_id, "lines": list(lines)})
        else:
            for line in lines:
                app.out.console.print(line, markup=False, highlight=False)
    app.exit()


def stop(
    run_id: Annotated[str, typer.Argument(help="The MLflow run id of the run to stop.")],
    region: RegionOpt = None,
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
        ids = _target().stop_run(run_id, region)  # type: ignore[attr-defined]
        msg = f"terminating {', '.join(ids)}" if ids else f"no live instance for run {run_id}"
        app.out.result({"run_id": run_id, "terminated": ids}, render=msg)
    app.exit()


def register(app: typer.Typer) -> None:
    app.command("ps")(ps)
    app.command("logs")(logs)
    app.command("stop")(stop)
