"""``gpuops run``, ``gpuops sweep`` and ``gpuops predict``: train experiments from YAML, tracked in MLflow."""

from __future__ import annotations

import contextlib
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
RayAddressOpt = Annotated[str | None, typer.Option("--ray-address", help="ray: the cluster (default: "
                                                   "RAY_ADDRESS, else a Ray instance on 127.0.0.1 started "
                                                   "for this command).")]
GpusPerTrialOpt = Annotated[float | None, typer.Option("--gpus-per-trial", help="ray: GPUs each trial holds "
                                                       "(default: resources.gpus; 0.5 shares a GPU).")]
MaxFailuresOpt = Annotated[int | None, typer.Option("--max-failures", help="ray: times a failed trial is "
                                                    "tried again, into the same run (default 1).")]


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
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


class _Follow:
    """Renders a handle's events: the progress bar (trainer events), log lines (containers,
    instances), and one warning when CPU training will take more than an hour."""

    def __init__(self, app: Application) -> None:
        self.app = app
        self.summary: Any = None
        self.error: str | None = None

    def __call__(self, handle: Any, total_hint: int | None = None) -> None:
        out = self.app.out
        device, total, first, warned = None, None, None, False
        with out.progress("training", total=total_hint) as bar:
            for ev in handle.events():
                if ev.kind == "log":
                    if not out.json_mode and not out.quiet:
                        out.err_console.print(ev.text, markup=False)
                elif ev.kind == "start":
                    bar.update(total=ev.total, completed=ev.start)
                    device, total = ev.device, ev.total
                elif ev.kind == "progress" and ev.it is not None:
                    now = time.monotonic()
                    if first is None:
                        first = (now, ev.it)
                    elif device == "cpu" and total and not warned and ev.it > first[1]:
                        eta = (total - ev.it) * (now - first[0]) / (ev.it - first[1])
                        if eta > 3600:
                            warned = True
                            out.warn(f"training on the CPU: about {eta / 3600:.1f} h to go at this "
                                     "speed (a GPU, or fewer train.iterations, is faster)")
                    bar.update(completed=ev.it, status=f"loss {ev.loss or 0:.4g} · "
                               f"{ev.throughput or 0:.0f} samples/s")
                elif ev.kind == "eval":
                    shown = {k: v for k, v in ev.metrics.items() if k in ("val/psnr", "val/accuracy")}
                    if shown:
                        bar.update(status=" ".join(f"{k} {_fmt(v)}" for k, v in shown.items()))
                elif ev.kind == "summary":
                    self.summary = ev
                elif ev.kind == "error":
                    self.error = ev.text


def _confirm(app: Application, question: str) -> None:
    """Ask before spending money; refuse (exit 2) when there is no terminal to ask on."""
    import sys

    if not sys.stdin.isatty():
        raise UsageError(f"not launching without confirmation ({question.rstrip('?')}): stdin is not a "
                         "terminal", hint="check the plan, then run again with --yes")
    if not typer.confirm(question, default=False, err=True):
        raise GpuopsError("launch cancelled; nothing was started")


def execute(app: Application, request: Any, *, yes: bool = False) -> dict[str, Any]:
    """Plan, confirm where it costs money, launch, follow, wait: the same calls for every target.
    Returns the run's summary document (``gpuops.launch.summarise``)."""
    from gpuops.launch import summarise
    from gpuops.targets import get_target

    target = get_target(request.target)
    plan = target.plan(request)
    doc: dict[str, Any] = {"target": request.target, "launched": False}
    if plan.doc:
        doc["plan"] = plan.doc
    if plan.consent is not None:
        app.out.print(app.out.table(["", "value"], plan.rows, title=f"gpuops run --target {request.target}: "
                                                                   "plan"))
        if not yes:
            try:
                _confirm(app, plan.consent)
            except BaseException as e:
                doc["error"] = str(e) if isinstance(e, GpuopsError) else "interrupted"
                app.out.result(doc)  # --json: still one document, with the plan and launched: false
                raise
    began = time.monotonic()
    handle = target.launch(plan)
    doc.update({"launched": True, "run_id": handle.run_id, "job_id": handle.job.job_id})
    app.out.info(f"run {handle.run_id} in experiment {handle.experiment!r} ({request.target}"
                 + (f": {handle.job.job_id[:12]}" if request.target != "local" else "") + ")")
    if "deadline" in handle.job.details:  # a cloud instance: it ends by itself, and how to reach it
        app.out.info(f"powers off by {handle.job.details['deadline']} · log: gpuops logs {handle.run_id} "
                     f"--follow · stop: gpuops stop {handle.run_id}")
    follow = _Follow(app)
    try:
        if getattr(request.options, "detach", False):
            from gpuops.targets.base import JobState, RunOutcome

            outcome = RunOutcome(status="RUNNING", exit_code=0, state=JobState.RUNNING)
            state = "launched"
        else:
            try:
                follow(handle, request.resolved.spec.train.iterations
                       if hasattr(request.resolved.spec, "train") else None)
                outcome = handle.wait()
            except _Stop as e:  # only this process got it: pass it on at once
                handle.interrupt(signalled=False, reason=f"gpuops run got {e}")
                raise
            except KeyboardInterrupt:
                outcome = handle.interrupt(signalled=True, reason="stopped by gpuops (Ctrl-C)")
                if outcome.status != "RUNNING":
                    raise
                app.out.info(f"stopped following; {request.target} job {handle.job.job_id} runs on "
                             f"(gpuops stop {handle.run_id} ends it now)")
            detached = outcome.exit_code == 130 and outcome.status == "RUNNING"
            state = "detached" if detached else str(outcome.state)
        doc.update(summarise(handle, outcome, began=began, summary=follow.summary, error=follow.error))
        doc["state"] = state
        if outcome.error == "interrupted":
            doc["outcome"] = "interrupted"
            app.out.warn(f"spot interruption: continue with gpuops run --resume {handle.run_id} --target aws")
    finally:  # every way out: job folders, containers and host-side servers go
        handle.close()
    return doc


def _summary_table(app: Application, doc: dict[str, Any]) -> Any:
    rows = [("run", doc["run_id"]), ("experiment", doc["experiment"]), ("target", doc["target"]),
            ("status", doc["status"])]
    if doc.get("state") in ("launched", "detached"):
        rows.append(("state", doc["state"]))
    rows += [(k, _fmt(v)) for k, v in doc["metrics"].items()]
    if doc.get("train_seconds") is not None:
        rows.append(("training time", f"{doc['train_seconds']:.1f} s"))
    for key in ("deadline", "log", "image"):
        if key in doc.get("details", {}):
            rows.append((key, str(doc["details"][key])))
    rows.append(("MLflow store", doc["store"]))
    return app.out.table(["", "value"], rows, title="gpuops run")


def report(app: Application, doc: dict[str, Any]) -> None:
    """The summary, and the exit code: 0 finished (or launched and detached), 130 killed, else 1."""
    app.out.result(doc, render=_summary_table(app, doc))
    if doc["status"] == "FINISHED" or doc.get("state") == "launched":
        app.out.info(f"MLflow store: {doc['store']}")
        return
    if doc.get("state") == "detached":
        app.exit_code = 130
        return
    if doc["status"] == "RUNNING":
        return
    last = [ln for ln in (doc.get("error") or "").splitlines() if ln.strip()][-1:]
    tail = f": {last[0].strip()}" if last else ""
    app.out.error(f"run {doc['run_id']} {doc['status']}{tail}")
    app.exit_code = 130 if doc["status"] == "KILLED" else 1


def target_options(target: str, *, env: str | None = None, image: str | None = None,
                   aws: dict[str, Any] | None = None, ray: dict[str, Any] | None = None) -> Any:
    """The typed options of ``--target``, refusing options of another target."""
    from gpuops.targets import TARGET_NAMES
    from gpuops.targets.base import AwsOptions, DockerOptions, LocalOptions, RayOptions

    for name, given_for in (("aws", aws), ("ray", ray)):
        given = [k for k, value in (given_for or {}).items() if value not in (None, False)]
        if target != name and given:
            raise UsageError(f"{', '.join(given)}: only for --target {name} (this run's target is {target})")
    if target == "ray":
        if env or image:
            raise UsageError(f"{'--env' if env else '--image'}: not for --target ray (its nodes train with "
                             "their own Python)")
        r = {k.lstrip("-").replace("-", "_"): v for k, v in (ray or {}).items() if v is not None}
        if r.get("max_failures", 0) < 0 or r.get("gpus_per_trial", 0) < 0:
            raise UsageError("--max-failures and --gpus-per-trial: expected 0 or more")
        return RayOptions(address=r.get("ray_address"), gpus_per_trial=r.get("gpus_per_trial"),
                          max_failures=r.get("max_failures", 1), dashboard=r.get("submit"),
                          **({"gpuops_cmd": r["gpuops_cmd"]} if r.get("gpuops_cmd") else {}))
    if target == "local":
        if env or image:
            raise UsageError(f"{'--env' if env else '--image'}: only for --target docker or aws "
                             "(the local target trains with this Python)")
        return LocalOptions()
    if target == "docker":
        return DockerOptions(env=env or "pytorch", image=image)
    if target == "aws":
        a = {k.lstrip("-").replace("-", "_"): v for k, v in (aws or {}).items() if v not in (None, False)}
        return AwsOptions(env=env, image=image, **a)
    raise UsageError(f"unknown target {target!r}: expected one of {', '.join(TARGET_NAMES)}")


def run(
    spec: Annotated[Path | None, typer.Argument(help="Experiment spec (experiments/*.yaml); optional "
                                                "with --resume.", show_default=False)] = None,
    target: Annotated[str, typer.Option("--target", help="Where to train: local | docker | aws | ray.")
                      ] = "local",
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
    resolved: Annotated[Path | None, typer.Option("--resolved", hidden=True, help="A resolved experiment "
                                                  "written by gpuops (the docker and aws targets' inner "
                                                  "side).")] = None,
    env: Annotated[str | None, typer.Option("--env", help="Environment (environments/NAME.yaml) for "
                                            "docker/aws.")] = None,
    instance_type: Annotated[str | None, typer.Option("--instance-type", help="aws: EC2 type.")] = None,
    spot: Annotated[bool, typer.Option("--spot", help="aws: a spot instance.")] = False,
    max_hours: Annotated[float | None, typer.Option("--max-hours",
                                                    help="aws: hard stop after H hours.")] = None,
    region: Annotated[str | None, typer.Option("--region", help="aws: region.")] = None,
    ami: Annotated[str | None, typer.Option("--ami", help="aws: AMI id (default: the Deep Learning "
                                            "Base GPU AMI from its public SSM parameter).")] = None,
    image: Annotated[str | None, typer.Option("--image", help="docker/aws: image to run (docker: a local "
                                              "image, used as is; aws: a registry image is used as is, "
                                              "a local one is pushed to ECR; default: the --env "
                                              "image).")] = None,
    bucket: Annotated[str | None, typer.Option("--bucket", help="aws: S3 bucket for inputs, logs and "
                                               "checkpoints (default: gpuops-ACCOUNT-REGION).")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="aws: return once the instance is launched "
                                         "instead of following its log.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before spending money (aws).")] = False,
    ray_address: RayAddressOpt = None,
    gpus_per_trial: GpusPerTrialOpt = None,
    max_failures: MaxFailuresOpt = None,
    submit: Annotated[str | None, typer.Option("--submit", metavar="DASHBOARD", help="ray: submit the run "
                                               "as a job through the Jobs API of this dashboard "
                                               "(http://HEAD:8265) and return; gpuops ps/logs/stop "
                                               "--target ray reach it.")] = None,
    gpuops_cmd: Annotated[str | None, typer.Option("--gpuops-cmd", help="ray --submit: how the cluster "
                                                   "starts gpuops (default: gpuops).")] = None,
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
      gpuops run experiments/srcnn_y.yaml --target ray --gpus-per-trial 0.5
      gpuops run experiments/srcnn_y.yaml --target ray --set resources.gpus=4   # DDP, Ray Train
      gpuops run experiments/srcnn_y.yaml --target ray --submit http://10.0.0.5:8265 \\
          --tracking-uri http://10.0.0.5:5000
    """
    app = Application(json_mode=json_, quiet=quiet, no_color=no_color)
    _quiet_mlflow()
    with _redacted_crash(), _stop_signals(), app.guard(), _redacted_messages():
        from gpuops.launch import build_request

        aws_only = {"--instance-type": instance_type, "--spot": spot, "--max-hours": max_hours,
                    "--region": region, "--ami": ami, "--bucket": bucket, "--detach": detach}
        ray_only = {"--ray-address": ray_address, "--gpus-per-trial": gpus_per_trial,
                    "--max-failures": max_failures, "--submit": submit, "--gpuops-cmd": gpuops_cmd}
        options = target_options(target, env=env, image=image, aws=aws_only, ray=ray_only)
        request = build_request(spec=spec, overrides=list(set_ or []), smoke=smoke, download=download,
                                resume=resume, run_id=run_id, force=force, options=options,
                                tracking_uri=tracking_uri, resolved_file=resolved,
                                notify=app.out.info)
        report(app, execute(app, request, yes=yes))
    app.exit()


def sweep(
    spec: Annotated[Path, typer.Argument(help="Experiment spec.", show_default=False)],
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="KEY=V1,V2,... e.g. train.subset=1000,3000,5000 (default: the spec's "
                        "sweep: section).")] = None,
    metric: Annotated[str | None, typer.Option("--metric", help="Metric for the plot (default val/accuracy "
                                               "or val/psnr).")] = None,
    target: Annotated[str, typer.Option("--target", help="Where the children train: local | docker (one "
                                        "after another) | ray (at once, over the cluster's GPUs).")
                      ] = "local",
    env: Annotated[str | None, typer.Option("--env", help="docker: environment (environments/NAME.yaml).")
                   ] = None,
    ray_address: RayAddressOpt = None,
    gpus_per_trial: GpusPerTrialOpt = None,
    max_failures: MaxFailuresOpt = None,
    smoke: SmokeOpt = False,
    set_: SetOpt = None,
    tracking_uri: UriOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    """Run one spec for several values of a field: child runs under one parent run.

    Each value is a normal `gpuops run` on the target, logged as a child of a parent MLflow run;
    the parent gets a plot of the final metric against the value (sweep.png) and a table of
    results (sweep.json). Every child spec is validated before anything is tracked.

    \b
    Examples:
      gpuops sweep experiments/cifar10_subset_sweep.yaml
      gpuops sweep experiments/cifar10_cnn.yaml --param train.subset=1000,3000,5000,10000,50000
      gpuops sweep experiments/srcnn_y.yaml --param train.lr=1e-3,3e-4,1e-4 --metric val/psnr
      gpuops sweep experiments/srcnn_y.yaml --param model.layers=32x3x3_1x3x3,64x9x9_32x5x5_1x5x5 \\
          --target ray --ray-address 10.0.0.5:6379 --tracking-uri http://10.0.0.5:5000
    """
    app = Application(json_mode=json_, quiet=quiet, no_color=no_color)
    _quiet_mlflow()
    with _redacted_crash(), _stop_signals(), app.guard(), _redacted_messages():
        from gpuops.sweeps import plan_sweep, run_sweep

        if target not in ("local", "docker", "ray"):
            raise UsageError(f"--target {target}: sweeps run on local, docker or ray")
        options = target_options(target, env=env, ray={"--ray-address": ray_address,
                                                       "--gpus-per-trial": gpus_per_trial,
                                                       "--max-failures": max_failures})
        plan = plan_sweep(spec, param=param, metric=metric, overrides=list(set_ or []), smoke=smoke)
        doc = run_sweep(plan, options=options, tracking_uri=tracking_uri,
                        run_child=lambda request: execute(app, request), on_child=app.out.info)
        rows = [(r["value"], r["run_id"], r["status"], _fmt(r.get("metric"))) for r in doc["runs"]]
        app.out.result(doc, render=app.out.table([plan.key, "run", "status", plan.metric], rows,
                                                  title=f"sweep {doc['parent_run_id']}"))
        if any(r["status"] != "FINISHED" for r in doc["runs"]):
            app.exit_code = 1
    app.exit()


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
