"""``gpuops run``, ``gpuops sweep`` and ``gpuops predict``: train experiments from YAML, tracked in MLflow."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from gpuops.cli.app import Application, JsonOpt, NoColorOpt, QuietOpt
from gpuops.errors import GpuopsError, UsageError

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a spec field: --set train.lr=1e-4 "
                                                   "(repeatable; validated like the file, logged as a tag).")]
UriOpt = Annotated[str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: "
                                             "MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db).")]
SmokeOpt = Annotated[bool, typer.Option("--smoke", help="A few iterations on a few images/examples: the "
                                         "whole path on CPU in seconds (classification uses digits).")]

VAL_KEYS = ("val/psnr", "val/psnr_bicubic", "val/psnr_bicubic_full", "val/ssim", "val/ssim_bicubic",
            "val/accuracy", "val/loss", "train/loss", "train/throughput")


def _quiet_mlflow() -> None:
    """MLflow's INFO lines (store creation, ...) are noise on the terminal of a training run."""
    import logging
    import os

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is first imported
    logging.getLogger("mlflow").setLevel(logging.WARNING)


class _Stop(KeyboardInterrupt):
    """SIGTERM or SIGHUP of ``gpuops run``: handled as Ctrl-C, but the trainer did not get it."""


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """SIGTERM (systemd, kill) and SIGHUP (a closed SSH session) end a run as Ctrl-C does."""
    import signal

    def handler(signo: int, _frame: Any) -> None:
        raise _Stop(signal.Signals(signo).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _redacted_crash() -> Iterator[None]:
    """An unexpected exception: its traceback, printed with every URI's password hidden."""
    try:
        yield
    except (GpuopsError, KeyboardInterrupt, typer.Exit, SystemExit):
        raise
    except Exception as e:
        import sys
        import traceback

        from gpuops.tracking.tracker import redact_text

        sys.stderr.write(redact_text("".join(traceback.format_exception(e))))
        raise typer.Exit(1) from None


@contextlib.contextmanager
def _redacted_messages() -> Iterator[None]:
    """A gpuops error's line and hint, with every URI's password hidden (they may quote MLflow)."""
    try:
        yield
    except GpuopsError as e:
        from gpuops.tracking.tracker import redact_text

        e.message = redact_text(e.message)
        e.args = (e.message,)
        if e.hint:
            e.hint = redact_text(e.hint)
        raise


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def _store_hint(uri: str) -> str:
    from gpuops.tracking.tracker import redact_uri

    if uri.startswith("sqlite:///"):
        return f"{uri[len('sqlite:///'):]} (open it with: gpuops ui)"
    return redact_uri(uri)


def _run_local(app: Application, request: Any, total_hint: int | None = None) -> dict[str, Any]:
    """Launch on the local target, show progress, wait, and return the summary document."""
    from gpuops.targets.local import LocalTarget

    target = LocalTarget()
    job = target.launch(request)
    try:
        return _follow_local(app, target, job, total_hint)
    finally:  # every way out: the job folder (resolved spec, events, trainer log) goes
        target.cleanup(job)


def _follow_local(app: Application, target: Any, job: Any, total_hint: int | None) -> dict[str, Any]:
    from gpuops.tracking.tracker import Tracker, redact_uri

    app.out.info(f"run {job.run_id} in experiment {job.details['experiment']!r}")
    summary: dict[str, Any] = {}
    error: str | None = None
    began = time.monotonic()
    try:
        device, total, first, warned = None, None, None, False
        with app.out.progress("training", total=total_hint) as bar:
            for ev in target.follow(job):
                kind = ev.get("event")
                if kind == "start":
                    bar.update(total=ev["total"], completed=ev["start"])
                    device, total = ev.get("device"), ev["total"]
                elif kind == "progress":
                    now = time.monotonic()
                    if first is None:
                        first = (now, ev["it"])
                    elif device == "cpu" and total and not warned and ev["it"] > first[1]:
                        eta = (total - ev["it"]) * (now - first[0]) / (ev["it"] - first[1])
                        if eta > 3600:
                            warned = True
                            app.out.warn(f"training on the CPU: about {eta / 3600:.1f} h to go at this "
                                         "speed (a GPU, or fewer train.iterations, is faster)")
                    bar.update(completed=ev["it"], status=f"loss {ev['loss']:.4g} · "
                               f"{ev['throughput']:.0f} samples/s")
                elif kind == "eval":
                    shown = {k: v for k, v in ev["metrics"].items() if k in ("val/psnr", "val/accuracy")}
                    if shown:
                        bar.update(status=" ".join(f"{k} {_fmt(v)}" for k, v in shown.items()))
                elif kind == "summary":
                    summary = ev
                elif kind == "error":
                    error = ev.get("message")
    except _Stop as e:  # only this process got it: pass it on to the trainer at once
        target.stop(job, signalled=False, reason=f"gpuops run got {e}")
        _keep_log(target, job)
        raise
    except KeyboardInterrupt:
        target.stop(job, signalled=True)
        _keep_log(target, job)
        raise
    rc, status = target.wait(job)
    tr = Tracker(str(job.details["tracking_uri"]))
    run = tr.client.get_run(job.run_id or "")
    metrics = {k: run.data.metrics[k] for k in VAL_KEYS if k in run.data.metrics}
    doc = {
        "run_id": job.run_id,
        "experiment": job.details["experiment"],
        "status": status,
        "exit_code": rc,
        "metrics": metrics,
        "iterations": summary.get("iterations"),
        "train_seconds": summary.get("seconds"),
        "wall_seconds": round(time.monotonic() - began, 2),
        "tracking_uri": redact_uri(str(job.details["tracking_uri"])),
        "store": _store_hint(str(job.details["tracking_uri"])),
        "artifact_uri": run.info.artifact_uri,
    }
    if status != "FINISHED":
        from gpuops.tracking.tracker import redact_text

        doc["error"] = redact_text(error or run.data.tags.get("gpuops.error", "")[-2000:] or target.tail(job))
        if _keep_log(target, job):  # the job folder goes; the log stays with the run
            doc["trainer_log"] = f"{run.info.artifact_uri}/{TRAINER_LOG}"
    return doc


TRAINER_LOG = "trainer.log"


def _keep_log(target: Any, job: Any) -> bool:
    """Log the trainer's output as the run's ``trainer.log`` artifact (a run that did not finish)."""
    from gpuops.tracking.tracker import Tracker, redact_text

    log = Path(str(job.details["log"]))
    try:
        text = log.read_text(errors="replace")
        if not text.strip() or not job.run_id:
            return False
        tr = Tracker(str(job.details["tracking_uri"]))
        tr.run_id = job.run_id
        tr.log_text(redact_text(text[-1_000_000:]), TRAINER_LOG)
        return True
    except Exception:  # the run's status matters more than its log
        return False


def _summary_table(app: Application, doc: dict[str, Any]) -> Any:
    rows = [("run", doc["run_id"]), ("experiment", doc["experiment"]), ("status", doc["status"])]
    rows += [(k, _fmt(v)) for k, v in doc["metrics"].items()]
    if doc.get("train_seconds") is not None:
        rows.append(("training time", f"{doc['train_seconds']:.1f} s"))
    rows.append(("MLflow store", doc["store"]))
    return app.out.table(["", "value"], rows, title="gpuops run")


def _confirm(plan: Any) -> None:
    """Ask before spending money; refuse (exit 2) when there is no terminal to ask on."""
    import sys

    cost = "an unknown amount" if plan.total_cost is None else f"at most ${plan.total_cost:.2f}"
    what = f"{plan.instance_type} in {plan.region} for up to {plan.max_hours:g} h ({cost})"
    if not sys.stdin.isatty():
        raise UsageError(f"not launching {what} without confirmation: stdin is not a terminal",
                         hint="check the plan, then run again with --yes")
    if not typer.confirm(f"Launch {what}?", default=False, err=True):
        raise GpuopsError("launch cancelled; nothing was started")


def _aws_outcome(impl: Any, job: Any) -> str | None:
    """The state the instance reported in S3 (running, succeeded, failed, interrupted), if any."""
    from gpuops.cloud.storage import read_status

    try:
        st = read_status(impl.client("s3", str(job.details["region"])), str(job.details["bucket"]),
                         job.run_id or job.job_id)
    except Exception:  # only used to word the message
        return None
    return str(st["state"]) if st and st.get("state") else None


def _run_aws(app: Application, request: Any, *, yes: bool, detach: bool) -> None:
    """Plan, show, confirm, launch; then follow the instance's log from S3 unless --detach."""
    import re

    from gpuops.cloud.prices import price_table
    from gpuops.targets.aws import AwsTarget
    from gpuops.tracking.tracker import redact_uri

    impl = AwsTarget()
    plan = impl.plan(request)
    prices = price_table()
    url = re.search(r"https?://\S+", prices.source)
    price_data = {"as_of": prices.as_of, "currency": prices.currency, "source": prices.source}
    plan_doc = {**plan.model_dump(mode="json"), "tracking_uri": redact_uri(plan.tracking_uri),
                "price_data": price_data}
    doc: dict[str, Any] = {"target": "aws", "launched": False, "plan": plan_doc}
    where = f", {url.group(0)}" if url else ""
    rows = [*plan.summary_rows(),
            ("price data", f"{prices.currency} on-demand list prices as of {prices.as_of}{where}")]
    app.out.print(app.out.table(["", "value"], rows, title="gpuops run --target aws: plan"))
    if not yes:
        try:
            _confirm(plan)
        except BaseException as e:
            doc["error"] = str(e) if isinstance(e, GpuopsError) else "interrupted"
            app.out.result(doc)  # --json: still one document, with the plan and launched: false
            raise
    job = impl.launch_plan(plan)
    details = {k: v for k, v in job.details.items() if isinstance(v, str | int | float | bool) or v is None}
    doc.update({"launched": True, "job_id": job.job_id, "run_id": job.run_id, "details": details})
    app.out.info(f"aws: instance {job.job_id}, MLflow run {job.run_id}, powers off by {details['deadline']}")
    app.out.info(f"log: gpuops logs {job.run_id} --follow · stop: gpuops stop {job.run_id}")
    state = "launched"
    if not detach:
        try:
            for line in impl.logs(job, follow=True):
                if not app.out.json_mode and not app.out.quiet:
                    app.out.err_console.print(line, markup=False)
            state = str(impl.status(job))
        except KeyboardInterrupt:
            app.out.info(f"stopped following; instance {job.job_id} keeps running until the run ends or "
                         f"{details['deadline']} (gpuops stop {job.run_id} ends it now)")
            state = "detached"
            app.exit_code = 130
        outcome = _aws_outcome(impl, job)
        if outcome:
            doc["outcome"] = outcome
        if outcome == "interrupted":
            app.out.warn(f"spot interruption: continue with gpuops run --resume {job.run_id} --target aws")
        if state not in ("succeeded", "running", "pending", "detached"):
            app.exit_code = 1
    doc["state"] = state
    rows = [("instance", job.job_id), ("MLflow run", job.run_id), ("state", state),
            ("deadline", details["deadline"]), ("log", details["log"])]
    app.out.result(doc, render=app.out.table(["", "value"], rows, title="gpuops run --target aws"))


def run(
    spec: Annotated[Path | None, typer.Argument(help="Experiment spec (experiments/*.yaml); optional "
                                                "with --resume.", show_default=False)] = None,
    target: Annotated[str, typer.Option("--target", help="Where to train: local | docker | aws.")] = "local",
    smoke: SmokeOpt = False,
    set_: SetOpt = None,
    tracking_uri: UriOpt = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Log into this EXISTING MLflow run "
                                               "(created by the caller, e.g. the docker target).")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue this interrupted run from its "
                                               "last checkpoint, into the same MLflow run (a unique "
                                               "prefix of its id will do).")] = None,
    force: Annotated[bool, typer.Option("--force", help="With --resume: continue even a FINISHED "
                                        "run.")] = False,
    download: Annotated[bool, typer.Option("--download", help="Fetch CIFAR-10 into data.root first "
                                           "when it is missing.")] = False,
    env: Annotated[str | None, typer.Option("--env", help="Environment (environments/NAME.yaml) for "
                                            "docker/aws.")] = None,
    instance_type: Annotated[str | None, typer.Option("--instance-type", help="aws: EC2 type.")] = None,
    spot: Annotated[bool, typer.Option("--spot", help="aws: a spot instance.")] = False,
    max_hours: Annotated[float | None, typer.Option("--max-hours",
                                                    help="aws: hard stop after H hours.")] = None,
    region: Annotated[str | None, typer.Option("--region", help="aws: region.")] = None,
    ami: Annotated[str | None, typer.Option("--ami", help="aws: AMI id (default: the Deep Learning "
                                            "Base GPU AMI from its public SSM parameter).")] = None,
    image: Annotated[str | None, typer.Option("--image", help="aws: image to run (a registry image is "
                                              "used as is, a local one is pushed to ECR; default: "
                                              "the --env image).")] = None,
    bucket: Annotated[str | None, typer.Option("--bucket", help="aws: S3 bucket for inputs, logs and "
                                               "checkpoints (default: gpuops-ACCOUNT-REGION).")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="aws: return once the instance is launched "
                                         "instead of following its log.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before spending money (aws).")] = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    """Train an experiment spec and track it in MLflow.

    Validates the spec (an invalid one is one line and exit code 2, before anything is tracked),
    creates an MLflow run (experiment = the spec's name) with the whole spec as params and the
    environment fingerprint, git commit and spec hash as tags, then trains in a child process
    with a progress bar and ends with a summary table. Ctrl-C, SIGTERM and SIGHUP mark the run
    KILLED, a crash FAILED (the trainer's log is kept with the run as trainer.log); the trainer
    never outlives gpuops run. --resume RUN_ID continues from the last checkpoint, and refuses
    while the run's trainer still runs.

    --target aws first shows the plan (instance, region, AMI, spot, hourly price, deadline and
    the most the run can cost, with the price file's date) and asks before launching; --yes
    skips the question, and without a terminal to ask on, --yes is required. The instance powers
    itself off after --max-hours whatever happens here; Ctrl-C only stops following its log.

    \b
    Examples:
      gpuops run experiments/srcnn_y.yaml
      gpuops run experiments/cifar10_fast.yaml --smoke --json
      gpuops run experiments/srcnn_y.yaml --set train.lr=1e-4 --set model.padding=same
      gpuops run --resume 3f2c9a0e...
      gpuops run experiments/srcnn_y.yaml --target docker --env pytorch
      gpuops run experiments/srcnn_y.yaml --target aws --env pytorch --spot --max-hours 4 \\
          --tracking-uri http://mlflow.internal:5000
      gpuops run --resume 3f2c9a0e... --target aws --spot --yes
    """
    app = Application(json_mode=json_, quiet=quiet, no_color=no_color)
    _quiet_mlflow()
    with _redacted_crash(), _stop_signals(), app.guard(), _redacted_messages():
        from gpuops.experiments.spec import load_experiment
        from gpuops.targets import get_target
        from gpuops.targets.base import LaunchRequest

        overrides = list(set_ or [])
        if resume and run_id:
            raise UsageError("--resume and --run-id are exclusive (--resume RUN_ID is enough)")
        if spec is None and not resume:
            raise UsageError("a spec file is needed (e.g. gpuops run experiments/srcnn_y.yaml), "
                             "or --resume RUN_ID")
        if resume:  # a unique prefix will do; a FINISHED run is not continued without --force
            from gpuops.tracking.runs import check_resumable, resolve_run_id
            from gpuops.tracking.tracker import Tracker

            client = Tracker(tracking_uri).client
            resume = resolve_run_id(client, resume)
            check_resumable(client, resume, force=force)
        resolved = None
        if not resume:
            resolved = load_experiment(spec, overrides, smoke=smoke, download=download)  # type: ignore[arg-type]
            if download and resolved.spec.task == "classify" and resolved.spec.data.dataset == "cifar10":
                from gpuops.classify.data import CIFAR10_ARCHIVE, CIFAR10_FOLDER, download_cifar10

                root = Path(resolved.spec.data.root)
                if not (root / CIFAR10_ARCHIVE).is_file() and not (root / CIFAR10_FOLDER).is_dir():
                    app.out.info(f"downloading CIFAR-10 into {root}")
                    download_cifar10(root)
        aws_only = {"--instance-type": instance_type, "--spot": spot, "--max-hours": max_hours,
                    "--region": region, "--ami": ami, "--image": image, "--bucket": bucket,
                    "--detach": detach}
        given = [name for name, value in aws_only.items() if value not in (None, False)]
        if target != "aws" and given:
            raise UsageError(f"{', '.join(given)}: only for --target aws (this run's target is {target})")
        options: dict[str, object] = {"env": env, "instance_type": instance_type, "spot": spot,
                                      "max_hours": max_hours, "region": region, "yes": yes,
                                      "ami": ami, "image": image, "bucket": bucket}
        request = LaunchRequest(spec_path=Path(spec) if spec else Path("."), overrides=overrides,
                                tracking_uri=tracking_uri, run_id=resume or run_id, smoke=smoke,
                                env_name=env, options=options)
        if target == "local":
            options.update({"resolved": resolved, "resume": bool(resume)})
            doc = _run_local(app, request)
            app.out.result(doc, render=_summary_table(app, doc))
            if doc["status"] == "FINISHED":
                app.out.info(f"MLflow store: {doc['store']}")
            else:
                last = [ln for ln in (doc.get("error") or "").splitlines() if ln.strip()][-1:]
                tail = f": {last[0].strip()}" if last else ""
                app.out.error(f"run {doc['run_id']} {doc['status']}{tail}")
                app.exit_code = 130 if doc["status"] == "KILLED" else 1
        elif target == "aws":
            _run_aws(app, request, yes=yes, detach=detach)
        else:
            impl = get_target(target)
            job = impl.launch(request)
            app.out.info(f"{target}: job {job.job_id}, MLflow run {job.run_id}")
            for line in impl.logs(job, follow=True):
                if not json_ and not quiet:
                    app.out.err_console.print(line, markup=False)
            state = impl.status(job)
            doc = {"target": target, "job_id": job.job_id, "run_id": job.run_id, "state": str(state),
                   "details": {k: v for k, v in job.details.items() if isinstance(v, str | int | float)}}
            app.out.result(doc, render=app.out.table(["", "value"], [(k, v) for k, v in doc.items()
                                                                      if k != "details"]))
            if str(state) not in ("succeeded", "running", "pending"):
                app.exit_code = 1
    app.exit()


def sweep(
    spec: Annotated[Path, typer.Argument(help="Experiment spec.", show_default=False)],
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="KEY=V1,V2,... e.g. train.subset=1000,3000,5000 (default: the spec's "
                        "sweep: section).")] = None,
    metric: Annotated[str | None, typer.Option("--metric", help="Metric for the plot (default val/accuracy "
                                               "or val/psnr).")] = None,
    smoke: SmokeOpt = False,
    set_: SetOpt = None,
    tracking_uri: UriOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    """Run one spec for several values of a field: child runs under one parent run.

    Each value is a normal `gpuops run` (local target) logged as a child of a parent MLflow run;
    the parent gets a plot of the final metric against the value (sweep.png) and a table of
    results (sweep.json).

    \b
    Examples:
      gpuops sweep experiments/cifar10_subset_sweep.yaml
      gpuops sweep experiments/cifar10_cnn.yaml --param train.subset=1000,3000,5000,10000,50000
      gpuops sweep experiments/srcnn_y.yaml --param train.lr=1e-3,3e-4,1e-4 --metric val/psnr
    """
    app = Application(json_mode=json_, quiet=quiet, no_color=no_color)
    _quiet_mlflow()
    with _redacted_crash(), _stop_signals(), app.guard(), _redacted_messages():
        from gpuops.experiments.spec import load_experiment, parse_override

        overrides = list(set_ or [])
        base = load_experiment(spec, overrides, smoke=smoke)
        if param:
            if len(param) != 1:
                raise UsageError("one --param KEY=V1,V2,... per sweep")
            key, _, raw = param[0].partition("=")
            values = [parse_override(f"{key}={v}")[1] for v in raw.split(",") if v.strip()]
            if not key or not values:
                raise UsageError(f"--param {param[0]!r}: expected KEY=V1,V2,...")
        elif base.spec.sweep is not None:
            key, values = base.spec.sweep.param, list(base.spec.sweep.values)
        else:
            raise UsageError(f"{spec}: no sweep: section; give --param KEY=V1,V2,...")
        metric = metric or (base.spec.sweep.metric if base.spec.sweep else None) or (
            "val/psnr" if base.spec.task == "sr" else "val/accuracy")
        # validate every child spec before anything is tracked
        children = [load_experiment(spec, [*overrides, f"{key}={v}"], smoke=smoke) for v in values]
        doc = _sweep(app, base, children, key, values, metric, tracking_uri)
        rows = [(r["value"], r["run_id"], r["status"], _fmt(r.get("metric"))) for r in doc["runs"]]
        app.out.result(doc, render=app.out.table([key, "run", "status", metric], rows,
                                                  title=f"sweep {doc['parent_run_id']}"))
        if any(r["status"] != "FINISHED" for r in doc["runs"]):
            app.exit_code = 1
    app.exit()


def _sweep(app: Application, base: Any, children: list[Any], key: str, values: list[Any], metric: str,
           tracking_uri: str | None) -> dict[str, Any]:
    import tempfile

    from gpuops.targets.base import LaunchRequest
    from gpuops.tracking.runs import run_tags
    from gpuops.tracking.tracker import Tracker

    tr = Tracker(tracking_uri)
    tags = run_tags(base, "local")
    tags.update({"gpuops.sweep.param": key, "gpuops.sweep.values": json.dumps(values)})
    parent = tr.start(base.experiment_name, run_name=f"sweep {key}", tags=tags)
    results: list[dict[str, Any]] = []
    try:
        for value, child in zip(values, children, strict=True):
            app.out.info(f"{key}={value}")
            req = LaunchRequest(spec_path=Path(child.source), overrides=child.overrides,
                                tracking_uri=tr.tracking_uri, smoke=child.smoke,
                                options={"resolved": child, "parent_run_id": parent})
            doc = _run_local(app, req)
            results.append({"value": value, "run_id": doc["run_id"], "status": doc["status"],
                            "metric": doc["metrics"].get(metric)})
            if doc["status"] == "KILLED":
                raise KeyboardInterrupt
        with tempfile.TemporaryDirectory() as tmp:
            png = _sweep_plot(results, key, metric, Path(tmp) / "sweep.png",
                              smoke=any(c.smoke for c in children))
            tr.log_artifact(png)
            tr.log_text(json.dumps(results, indent=2), "sweep.json")
        for r in results:
            if r["metric"] is not None and isinstance(r["value"], int | float):
                tr.log_metrics({f"sweep/{metric}": r["metric"]}, step=int(r["value"]))
        tr.finish("FINISHED" if all(r["status"] == "FINISHED" for r in results) else "FAILED")
    except KeyboardInterrupt:
        tr.finish("KILLED", "sweep interrupted")
        raise
    except BaseException as e:
        tr.finish("FAILED", f"{type(e).__name__}: {e}")
        raise
    return {"parent_run_id": parent, "param": key, "metric": metric, "runs": results}


def _sweep_plot(results: list[dict[str, Any]], key: str, metric: str, path: Path, *,
                smoke: bool = False) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(r["value"], r["metric"]) for r in results if r["metric"] is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    numeric = all(isinstance(v, int | float) for v, _ in pts)
    if numeric:
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
        if pts and min(p[0] for p in pts) > 0 and max(p[0] for p in pts) / min(p[0] for p in pts) >= 20:
            ax.set_xscale("log")
    else:
        ax.bar([str(p[0]) for p in pts], [p[1] for p in pts])
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against {key}" + (" (--smoke: a check of the path, not a result)"
                                              if smoke else ""), fontsize=10 if smoke else None)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def predict(
    run_id: Annotated[str, typer.Argument(help="MLflow run of a super-resolution model.",
                                          show_default=False)],
    image: Annotated[Path, typer.Argument(help="Input image (PNG, JPEG, BMP).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o",
                                      help="Where to write the upscaled image.")] = Path("out.png"),
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "auto",
    tracking_uri: UriOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    """Upscale an image with the model logged by a super-resolution run.

    Downloads the run's model (model/state_dict.pt + model/config.json), rebuilds it and
    upscales IMAGE by the run's scale (Y models: Cb/Cr are upscaled bicubically).

    \b
    Example:
      gpuops predict 3f2c9a0e... photo.png --out photo_x3.png
    """
    app = Application(json_mode=json_, quiet=quiet, no_color=no_color)
    _quiet_mlflow()
    with _redacted_crash(), _stop_signals(), app.guard(), _redacted_messages():
        from gpuops.train.predict import predict_image

        doc = predict_image(run_id, image, out, device=device, tracking_uri=tracking_uri)
        app.out.result(doc, render=f"wrote {doc['out']} ({doc['width']}x{doc['height']}, ×{doc['scale']}, "
                                   f"{doc['colour']})")
    app.exit()


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("sweep")(sweep)
    app.command("predict")(predict)
