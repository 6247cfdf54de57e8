"""The ``docker`` target: run an experiment inside its environment's image.

``plan`` checks what needs no image: the environment exists and carries gpuops (Python >= 3.11), and a
spec that asks for CUDA (``resources.device: cuda``, after ``--set``) has a CUDA image and an engine with
the NVIDIA runtime. ``launch``:

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
"""

from __future__ import annotations

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
        env = load_environment(opts.env, opts.env_dir)
        if not installs_gpuops(env):
            raise UsageError(
                f"environment {env.name!r} has Python {env.python}; gpuops (which runs the experiment in "
                "the container) needs Python >= 3.11", hint="use a pytorch environment: --env pytorch")
        gpus = env.cuda is not None and has_nvidia_runtime(self.client())
        if request.resolved.spec.resources.device == "cuda" and not gpus:
            raise ExternalError(
                f"{request.resolved.spec.name} asks for a GPU (resources.device: cuda) but "
                + ("this Docker Engine has no NVIDIA runtime" if env.cuda else f"{env.name} is a CPU image"),
                hint=_gpu_fix() if env.cuda else "use a CUDA environment (--env pytorch)")
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
            handle = DockerRun(self.client(), run_id, uri, run_uri, request.resolved.experiment_name, server)
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
