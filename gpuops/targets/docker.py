"""The ``docker`` target: run an experiment inside its environment's image.

``plan`` checks what needs no image: the environment exists and carries gpuops (Python >= 3.11; not
needed for ``task: script``), and a spec that asks for CUDA (``resources.device: cuda``, after
``--set``) has a CUDA image and an engine with the NVIDIA runtime. ``launch``:

1. finds (or builds) ``gpuops/<env>:<hash>`` (build inputs from the options or the
   ``GPUOPS_BASE_IMAGE``, ``GPUOPS_WHEELHOUSE``, ``GPUOPS_CA_CERT`` variables, so that it finds the image
   ``gpuops build`` made with the same inputs), or uses ``options.image`` as given;
2. when the tracking store is local (sqlite/file), starts a host-side ``mlflow server`` on
   127.0.0.1 (``gpuops.tracking.server.start_server``) and runs the container with host networking;
3. creates the MLflow run on the host (``prepare_run``: the experiment, params, tags and spec.yaml
   every target gets) plus ``env.image_digest`` and ``gpuops.image``, so that Ctrl-C can mark it KILLED
   even if the container never started;
4. starts the container as the image's non-root user: the working directory and each data folder
   mounted read-only at the same path, the resolved experiment (a JSON file, so the container trains
   exactly what was validated here) read-only, ``gpuops-out/<run>`` writable, ``--gpus all`` when the
   engine has the NVIDIA runtime, and the command
   ``gpuops run --resolved FILE --target local --run-id RUN --tracking-uri URI [--resume]`` with
   ``GPUOPS_IMAGE_DIGEST`` set. No host environment variable is passed in (no credentials).

The handle streams the container's output as log events; ``wait`` (or Ctrl-C) removes the container,
marks a run left RUNNING FAILED (or KILLED), and stops the host server.

``task: script`` (``DockerScriptRun``) needs no gpuops in the image: the image is the one of ``--env``,
else of the spec's ``env:``; the container runs the script itself with the image's ``python``
(``gpuops.scripts.container``: ``/gpuops/work`` writable, data folders read-only under
``/gpuops/data``, a readable copy of the script's folder at ``/gpuops/code``) and the MLflow variables
of ``gpuops.scripts.supervise.script_environment`` pointing at the run on the host-side server. The
host reads the container's stdout and stderr (metrics by the spec's patterns, progress events), logs
them, the script's sources and its outputs folder as artifacts, and ends the run from the exit code.
Ctrl-C passes SIGINT on to the script (then SIGTERM, then SIGKILL), ends the run KILLED and removes
the container. Host system metrics (MLflow's monitor, NVML for the GPUs) are sampled on the host when
the container gets the GPUs or the spec asks (``tracking.system_metrics``); they cover the whole host.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpuops.errors import ExternalError, UsageError
from gpuops.targets.base import (
    DockerOptions,
    Job,
    JobState,
    LaunchPlan,
    LaunchRequest,
    RunEvent,
    RunOutcome,
    data_folders,
)

DEFAULT_ENV = "pytorch"
_LOCAL_SCHEMES = ("sqlite:", "file:")


def _is_local_store(uri: str) -> bool:
    return uri.startswith(_LOCAL_SCHEMES) or "://" not in uri


def _default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _opt_path(value: object, env_var: str) -> Path | None:
    v = value if value not in (None, "") else os.environ.get(env_var)
    return Path(str(v)) if v else None


def _gpu_fix() -> str:
    try:
        from gpuops.knowledge import load_kb

        for sig in load_kb().error_signatures():
            if sig.id == "docker_no_gpu_driver":
                return f"{sig.fix} (source: {sig.source.key})"
    except Exception:
        pass
    return ("install nvidia-container-toolkit, run `sudo nvidia-ctk runtime configure --runtime=docker` "
            "and restart docker")


def _script_env(spec: Any, opts: DockerOptions) -> str | Path:
    """The environment whose image runs a script: ``--env`` when given, else the spec's ``env:``
    (a resolved path to its YAML), else the default. A ``--env`` that contradicts ``env:`` is refused:
    the script was written for the one its spec names."""
    if not spec.env:
        return opts.env
    named = Path(spec.env)
    if opts.env not in (DEFAULT_ENV, named.stem):
        raise UsageError(f"{spec.name} runs in environment {named.stem!r} (its env:), not --env {opts.env}",
                         hint=f"drop --env, or give --env {named.stem}")
    return named


class DockerTarget:
    name = "docker"

    def __init__(self) -> None:
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            from gpuops.envs.build import docker_client

            self._client = docker_client()
        return self._client

    def _options(self, request: LaunchRequest) -> DockerOptions:
        opts = request.options
        if not isinstance(opts, DockerOptions):
            raise UsageError(f"the docker target was given {opts.kind} options")
        return opts

    def plan(self, request: LaunchRequest) -> LaunchPlan:
        from gpuops.envs import load_environment
        from gpuops.envs.build import has_nvidia_runtime
        from gpuops.envs.render import installs_gpuops

        opts = self._options(request)
        spec = request.resolved.spec
        script = spec.task == "script"
        env = load_environment(_script_env(spec, opts) if script else opts.env, opts.env_dir)
        if not script and not installs_gpuops(env):
            raise UsageError(
                f"environment {env.name!r} has Python {env.python}; gpuops (which runs the experiment in "
                "the container) needs Python >= 3.11", hint="use a pytorch environment: --env pytorch")
        gpus = env.cuda is not None and has_nvidia_runtime(self.client())
        if request.resolved.spec.resources.device == "cuda" and not gpus:
            raise ExternalError(
                f"{request.resolved.spec.name} asks for a GPU (resources.device: cuda) but "
                + ("this Docker Engine has no NVIDIA runtime" if env.cuda else f"{env.name} is a CPU image"),
                hint=_gpu_fix() if env.cuda else "use a CUDA environment (--env pytorch)")
        if script and spec.resources.device == "cpu":
            gpus = False  # the script is told so (CUDA_VISIBLE_DEVICES empty); no GPU is handed in
        rows = [("target", "docker"), ("environment", env.name),
                ("image", opts.image or f"gpuops/{env.name} (found or built)"),
                ("GPUs", "all" if gpus else "none")]
        return LaunchPlan(request, rows=rows, detail={"env": env, "gpus": gpus})

    def _image(self, opts: DockerOptions, env: Any) -> tuple[str, str]:
        """(tag, image id) of the image to run in."""
        from gpuops.envs.build import BuildOptions, build_image

        if opts.image:
            return opts.image, str(self.client().images.get(opts.image).id)
        build_opts = BuildOptions(
            base_image=opts.base_image or os.environ.get("GPUOPS_BASE_IMAGE") or None,
            wheelhouse=_opt_path(opts.wheelhouse, "GPUOPS_WHEELHOUSE"),
            ca_cert=_opt_path(opts.ca_cert, "GPUOPS_CA_CERT"),
            allow_untested=opts.allow_untested,
        )
        built = build_image(env, build_opts, client=self.client())
        return built.tag, built.image_id

    def launch(self, plan: LaunchPlan) -> DockerRun:
        from gpuops.tracking.runs import prepare_run
        from gpuops.tracking.tracker import Tracker

        request = plan.request
        opts = self._options(request)
        env, gpus = plan.detail["env"], bool(plan.detail["gpus"])
        tag, image_id = self._image(opts, env)
        uri = request.tracking_uri or _default_tracking_uri()
        server = None
        if _is_local_store(uri):
            from gpuops.tracking.server import start_server

            server = start_server(uri if "://" in uri or uri.startswith("sqlite:") else f"file:{uri}")
        run_uri = server.url if server is not None else uri
        handle: DockerRun | None = None
        try:
            tags = {**request.tags, "env.image_digest": image_id, "gpuops.image": tag, "gpuops.env": env.name}
            run_id = prepare_run(Tracker(run_uri), request.resolved, target="docker", run_id=request.run_id,
                                 parent_run_id=request.parent_run_id, tags=tags)
            kind = DockerScriptRun if request.resolved.spec.task == "script" else DockerRun
            handle = kind(self.client(), run_id, uri, run_uri, request.resolved.experiment_name, server)
            handle.start(request, tag, image_id, gpus=gpus)
        except BaseException as e:
            if handle is not None:
                handle.interrupt(signalled=False, reason=f"the container could not be started: {e}")
            elif server is not None:
                server.stop()
            raise
        return handle


class DockerRun:
    """The handle of one experiment running in a container."""

    def __init__(self, client: Any, run_id: str, tracking_uri: str, run_uri: str, experiment: str,
                 server: Any) -> None:
        self._client, self._server = client, server
        # tracking_uri: the store as the user named it; run_uri: what the container logs to (the
        # host-side server over a local store, else the same URI)
        self.run_id, self.tracking_uri, self.run_uri = run_id, tracking_uri, run_uri
        self.experiment = experiment
        self.job = Job(target="docker", job_id="", run_id=run_id, details={"tracking_uri": tracking_uri})
        self._jobdir: Path | None = None
        self._outcome: RunOutcome | None = None

    def start(self, request: LaunchRequest, tag: str, image_id: str, *, gpus: bool) -> None:
        import json
        import tempfile

        import docker

        cwd = Path.cwd().resolve()
        out_dir = cwd / "gpuops-out" / self.run_id
        out_dir.mkdir(parents=True, exist_ok=True)
        out_dir.chmod(0o777)  # the image's user (uid 1000) writes here
        self._jobdir = Path(tempfile.mkdtemp(prefix="gpuops-job-"))
        self._jobdir.chmod(0o755)
        resolved_file = self._jobdir / "resolved.json"
        resolved_file.write_text(json.dumps(request.resolved.to_dict()))
        resolved_file.chmod(0o644)
        volumes = {str(cwd): {"bind": str(cwd), "mode": "ro"},
                   str(self._jobdir): {"bind": str(self._jobdir), "mode": "ro"},
                   str(out_dir): {"bind": str(out_dir), "mode": "rw"}}
        for folder in data_folders(request.resolved):
            if not folder.is_relative_to(cwd):
                volumes[str(folder)] = {"bind": str(folder), "mode": "ro"}
        if request.resume:  # the host checked that it may be resumed; the spec comes from the run
            cmd = ["gpuops", "run", "--resume", self.run_id, "--force"]
        else:
            cmd = ["gpuops", "run", "--resolved", str(resolved_file), "--run-id", self.run_id]
        cmd += ["--target", "local", "--tracking-uri", self.run_uri]
        kwargs: dict[str, Any] = {
            "command": cmd, "detach": True, "working_dir": str(cwd), "volumes": volumes,
            "environment": {"GPUOPS_IMAGE_DIGEST": image_id, "GPUOPS_OUTPUT_DIR": str(out_dir),
                            "MLFLOW_TRACKING_URI": self.run_uri, "NO_COLOR": "1"},
            "labels": {"org.gpuops.run_id": self.run_id, "org.gpuops.image": tag},
            "network_mode": "host" if self._server is not None else None,
        }
        if gpus:
            kwargs["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
        container = self._client.containers.run(tag, **{k: v for k, v in kwargs.items() if v is not None})
        self.job.job_id = container.id
        self.job.details.update({"output_dir": str(out_dir), "started": time.time(), "image": tag,
                                 "image_digest": image_id})

    def _container(self) -> Any | None:
        import docker.errors

        if not self.job.job_id:
            return None
        try:
            return self._client.containers.get(self.job.job_id)
        except docker.errors.NotFound:
            return None

    def status(self) -> JobState:
        if self._outcome is not None:
            return self._outcome.state
        c = self._container()
        if c is None:
            return JobState.UNKNOWN
        c.reload()
        state = c.attrs.get("State", {})
        if state.get("Running"):
            return JobState.RUNNING
        if state.get("Status") == "created":
            return JobState.PENDING
        return JobState.SUCCEEDED if state.get("ExitCode") == 0 else JobState.FAILED

    def logs(self, follow: bool = False) -> Iterator[str]:
        c = self._container()
        if c is None:
            return
        buf = b""
        for chunk in c.logs(stream=True, follow=follow, stdout=True, stderr=True):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                yield line.decode(errors="replace")
        if buf:
            yield buf.decode(errors="replace")

    def events(self) -> Iterator[RunEvent]:
        for line in self.logs(follow=True):
            yield RunEvent("log", text=line)

    def wait(self) -> RunOutcome:
        """Wait for the container, remove it, and end a run it left RUNNING as FAILED."""
        if self._outcome is not None:
            return self._outcome
        c = self._container()
        code = 1
        if c is not None:
            code = int(c.wait().get("StatusCode", 1))
            c.remove(force=True)
        status = self._mark("FAILED", f"the container exited with status {code}")
        state = {"FINISHED": JobState.SUCCEEDED, "KILLED": JobState.KILLED}.get(status, JobState.FAILED)
        exit_code = {"FINISHED": 0, "KILLED": 130}.get(status, 1)
        self._outcome = RunOutcome(status=status, exit_code=exit_code, state=state)
        self.job.details["exit_code"] = code
        self.close()
        return self._outcome

    def stop(self, reason: str = "stopped by gpuops") -> None:
        """Stop and remove the container, mark the run KILLED, stop the host-side server."""
        c = self._container()
        if c is not None:
            try:
                c.stop(timeout=10)
            finally:
                c.remove(force=True)
        self._mark("KILLED", reason)
        self._outcome = RunOutcome(status="KILLED", exit_code=130, state=JobState.KILLED, error=reason)
        self.close()

    def interrupt(self, *, signalled: bool, reason: str) -> RunOutcome:
        self.stop(reason)
        assert self._outcome is not None
        return self._outcome

    def close(self) -> None:
        import shutil

        c = self._container() if self._outcome is None else None
        if c is not None:
            c.remove(force=True)
        if self._jobdir is not None:
            shutil.rmtree(self._jobdir, ignore_errors=True)
            self._jobdir = None
        if self._server is not None:
            self._server.stop()
            self._server = None

    def _mark(self, status: str, error: str) -> str:
        """End the run unless the container's gpuops did; the run's final status."""
        from gpuops.tracking.tracker import Tracker, mark_if_running

        try:
            mark_if_running(self.tracking_uri, self.run_id, status, error)
            tr = Tracker(self.tracking_uri)
            tr.run_id = self.run_id
            return tr.status()
        except Exception as e:  # the run's state is reported, never a crash on the way out
            self.job.details["mark_error"] = f"{type(e).__name__}: {e}"
            return status


# How long a script gets after the Ctrl-C passed on to it, then after SIGTERM, before SIGKILL.
SCRIPT_STOP_GRACE = 10.0
SCRIPT_TERM_GRACE = 5.0


class _QueuedEvents:
    """An ``EventWriter`` stand-in for ``ScriptOutput``: progress events go to the handle's queue as
    ``RunEvent``s instead of to a file."""

    def __init__(self, put: Any) -> None:
        self._put = put

    def emit(self, event: str, **data: Any) -> None:
        ev = RunEvent.from_trainer({"event": event, **data})
        if ev is not None:
            self._put(ev)

    def close(self) -> None:
        pass


class DockerScriptRun(DockerRun):
    """A ``task: script`` in the environment's image, supervised from the host: the container runs
    only the script (no gpuops inside); this handle reads its stdout and stderr as they come (metrics
    by the spec's patterns, progress events, the two logs as artifacts), logs the script's source
    files and its outputs folder, and ends the run from the container's exit code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        import queue

        self._queue: queue.Queue[RunEvent | None] = queue.Queue()
        self._reader: Any = None
        self._output: Any = None
        self._tracker: Any = None
        self._monitor: Any = None
        self._spec: Any = None
        self._work: Path | None = None
        self._stopped_by: str | None = None
        self._ended = False

    # -- start ------------------------------------------------------------------------------
    def start(self, request: LaunchRequest, tag: str, image_id: str, *, gpus: bool) -> None:
        import tempfile
        import threading

        import docker

        from gpuops.scripts.container import WORK_DIR, container_layout, script_file, snapshot_code
        from gpuops.scripts.runner import ScriptOutput
        from gpuops.scripts.supervise import script_environment
        from gpuops.tracking.tracker import Tracker, redact_text

        spec = self._spec = request.resolved.spec
        tracker = self._tracker = Tracker(self.run_uri)
        tracker.run_id = self.run_id
        work = self._work = Path.cwd().resolve() / "gpuops-out" / self.run_id
        work.mkdir(parents=True, exist_ok=True)
        work.chmod(0o777)  # the image's user (uid 1000) writes here
        self._jobdir = Path(tempfile.mkdtemp(prefix="gpuops-job-"))
        self._jobdir.chmod(0o755)
        script = script_file(spec)
        code = snapshot_code(script, self._jobdir / "code") if script is not None else None
        layout = container_layout(spec, work, code)
        if spec.outputs:
            (work / spec.outputs).mkdir(parents=True, exist_ok=True)
            (work / spec.outputs).chmod(0o777)
        experiment_id = str(tracker.client.get_run(self.run_id).info.experiment_id)
        environment = script_environment(
            tracking_uri=self.run_uri, run_id=self.run_id, experiment_id=experiment_id, data=layout.data,
            outputs=layout.outputs, params=spec.params, seed=spec.seed, device=spec.resources.device,
            threads=spec.resources.threads, resume=request.resume)
        environment.update({"GPUOPS_IMAGE_DIGEST": image_id, "NO_COLOR": "1"})
        tracker.set_tags({"gpuops.script.command": redact_text(json.dumps(layout.argv)),
                          "gpuops.script.python": "python (the image's)",
                          "gpuops.script.env": Path(tag.split(":")[0]).name,
                          "gpuops.device": spec.resources.device})
        labels = self._client.images.get(tag).labels or {}
        if labels.get("org.gpuops.framework"):  # the image's own record of its framework
            tracker.set_tags({"gpuops.script.framework": f"{labels['org.gpuops.framework']}=="
                                                         f"{labels.get('org.gpuops.framework_version', '')}"})
        self._log_code()
        self._output = ScriptOutput(spec.metrics, tracker, _QueuedEvents(self._queue.put), self._jobdir,
                                    self._log_line)
        kwargs: dict[str, Any] = {
            "command": layout.argv, "working_dir": WORK_DIR, "volumes": layout.volumes(),
            "environment": environment, "stdin_open": False, "tty": False,
            "labels": {"org.gpuops.run_id": self.run_id, "org.gpuops.image": tag},
        }
        if self._server is not None:
            kwargs["network_mode"] = "host"
        if gpus:
            kwargs["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
        container = self._client.containers.create(tag, **kwargs)
        self.job.job_id = container.id
        self.job.details.update({"output_dir": str(work), "started": time.time(), "image": tag,
                                 "image_digest": image_id})
        # attached before it starts, as `docker run` does: not a line is lost, however soon it exits
        stream = container.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True)
        self._reader = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._reader.start()
        container.start()
        self._queue.put(RunEvent("start", total=None, start=0, device=spec.resources.device))
        self._monitor = _system_metrics(spec, self.run_id, self.run_uri, gpus)

    def _log_line(self, stream: str, line: str) -> None:
        self._queue.put(RunEvent("log", text=line.rstrip("\r\n")))

    def _pump(self, stream: Any) -> None:
        """The container's output, split into lines per stream, into ``ScriptOutput``."""
        bufs = {"stdout": b"", "stderr": b""}
        try:
            for out, err in stream:
                for name, chunk in (("stdout", out), ("stderr", err)):
                    if not chunk:
                        continue
                    buf = bufs[name] + chunk
                    *lines, bufs[name] = buf.split(b"\n")
                    for raw in lines:
                        self._output.line(name, raw.decode("utf-8", errors="replace") + "\n")
        except Exception as e:  # the engine went away: what was read is kept, the exit code decides
            self._queue.put(RunEvent("log", text=f"gpuops: lost the container's output: {type(e).__name__}"))
        finally:
            for name, rest in bufs.items():
                if rest:
                    self._output.line(name, rest.decode("utf-8", errors="replace") + "\n")
            self._queue.put(None)

    # -- follow -----------------------------------------------------------------------------
    def events(self) -> Iterator[RunEvent]:
        import queue

        while not self._ended:
            try:
                ev = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if ev is None:
                self._ended = True
                return
            yield ev

    def tail(self) -> str:
        return self._output.tail.text() if self._output is not None else ""

    def wait(self) -> RunOutcome:
        if self._outcome is not None:
            return self._outcome
        for _ in self.events():  # output nobody followed still goes into the logs and metrics
            pass
        c = self._container()
        code = int(c.wait().get("StatusCode", 1)) if c is not None else 1
        return self._finish(code)

    # -- stop -------------------------------------------------------------------------------
    def interrupt(self, *, signalled: bool, reason: str) -> RunOutcome:
        """Ctrl-C (or a stop): pass SIGINT on to the script, then SIGTERM, then SIGKILL; the run
        ends KILLED and the container is removed."""
        if self._outcome is not None:
            return self._outcome
        c = self._container()
        if c is None and self._reader is None:  # never started (the launch failed): not a stop
            return self._finish(1, reason=reason, failed=reason)
        self._stopped_by = "SIGINT"
        code = 137
        if c is not None:
            steps = (("SIGINT", SCRIPT_STOP_GRACE), ("SIGTERM", SCRIPT_TERM_GRACE), ("SIGKILL", 10.0))
            for sig, grace in steps:
                try:
                    c.kill(signal=sig)
                    code = int(c.wait(timeout=grace).get("StatusCode", 137))
                    break
                except KeyboardInterrupt:  # another Ctrl-C: the next step at once
                    continue
                except Exception:  # exited already (kill refused), or still running after the grace
                    c.reload()
                    if not c.attrs.get("State", {}).get("Running"):
                        code = int(c.attrs.get("State", {}).get("ExitCode", 137))
                        break
        if self._reader is not None:
            self._reader.join(timeout=10)
        outcome = self._finish(code, reason=reason)
        return outcome

    def stop(self, reason: str = "stopped by gpuops") -> None:
        self.interrupt(signalled=False, reason=reason)

    def _finish(self, code: int, reason: str | None = None, failed: str | None = None) -> RunOutcome:
        """Remove the container, log what the run left, end it from the exit code."""
        import contextlib
        import io

        from gpuops.scripts.supervise import Outcome, exit_outcome
        from gpuops.tracking.tracker import Tracker

        if self._reader is not None:
            self._reader.join(timeout=30)
        c = self._container()
        if c is not None:
            with contextlib.suppress(Exception):
                c.remove(force=True)
        if self._monitor is not None:
            with contextlib.suppress(Exception):
                self._monitor.finish()
        tail = ""
        if self._output is not None:
            self._output.close()
            tail = self._output.tail.text()
        got = exit_outcome(code, stopped_by=self._stopped_by, stderr_tail=tail)
        if failed is not None:
            got = Outcome("FAILED", 1, failed)
        error = got.error
        if reason and got.status == "KILLED":
            error = f"{reason}; {error}" if error else reason
        tr = self._tracker
        if tr is not None:
            with contextlib.suppress(Exception):
                tr.set_tags({"gpuops.script.exit_code": str(code)})
            with contextlib.suppress(Exception):
                if self._output is not None:
                    self._output.log_logs()
            with contextlib.suppress(Exception):
                outputs = self._work / self._spec.outputs if self._work and self._spec.outputs else None
                if outputs is not None and outputs.is_dir() and any(outputs.iterdir()):
                    tr.client.log_artifacts(self.run_id, str(outputs), "outputs")
            try:
                # the user's store, not the host-side server: over HTTP MLflow writes "View run ..."
                # to stdout on set_terminated, and the library never prints (--json is one document)
                with contextlib.redirect_stdout(io.StringIO()):
                    end = Tracker(self.tracking_uri)
                    end.run_id = self.run_id
                    end.finish(got.status, error)
            except Exception as e:
                self.job.details["mark_error"] = f"{type(e).__name__}: {e}"
                self._mark(got.status, error or "")
        state = {"FINISHED": JobState.SUCCEEDED, "KILLED": JobState.KILLED}.get(got.status, JobState.FAILED)
        self._outcome = RunOutcome(status=got.status, exit_code=got.exit_code, state=state, error=error)
        self.job.details["exit_code"] = code
        self.close()
        return self._outcome

    def _log_code(self) -> None:
        """The script file and the spec's ``code:`` items, from the host, under ``code/``."""
        from gpuops.experiments.spec import script_file_index
        from gpuops.scripts.runner import code_files

        spec = self._spec
        items: list[str] = []
        idx = script_file_index(spec.entrypoint)
        if idx is not None and Path(spec.entrypoint[idx]).is_file():
            items.append(spec.entrypoint[idx])
        items += list(spec.code)
        for f, folder in code_files(items):
            self._tracker.log_artifact(f, folder)


def _system_metrics(spec: Any, run_id: str, uri: str, gpus: bool) -> Any:
    """MLflow's system metrics (CPU, memory and, through NVML, the GPUs) sampled on the host while
    the container runs: on when the spec asks (``tracking.system_metrics``), or by default when the
    container was handed the GPUs. They describe the whole host, not the container alone."""
    from gpuops.tracking.sysmetrics import start_system_metrics

    want = spec.tracking.system_metrics
    return start_system_metrics(run_id, uri, bool(gpus if want is None else want))
