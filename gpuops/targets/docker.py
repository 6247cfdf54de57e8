"""The ``docker`` target: run an experiment inside its environment's image.

``launch``:
1. finds (or builds) ``gpuops/<env>:<hash>`` for ``options["env"]`` (default ``pytorch``; build inputs
   from ``options`` ``base_image``/``wheelhouse``/``ca_cert`` or the ``GPUOPS_BASE_IMAGE``,
   ``GPUOPS_WHEELHOUSE``, ``GPUOPS_CA_CERT`` variables, so that it finds the image ``gpuops build``
   made with the same inputs), or uses ``options["image"]`` as given;
2. when the tracking store is local (sqlite/file), starts a host-side ``mlflow server`` on
   127.0.0.1 (``gpuops.tracking.server.start_server``) and runs the container with host networking;
3. creates the MLflow run on the host first (experiment = the spec's ``name``), with tags
   ``gpuops.target=docker``, ``env.image_digest`` and ``gpuops.image``, so that Ctrl-C can mark it
   KILLED even if the container never started;
4. starts the container as the image's non-root user: the working directory (spec, data) mounted
   read-only at the same path, ``gpuops-out/<run>`` mounted writable, ``--gpus all`` when the engine
   has the NVIDIA runtime, and the command
   ``gpuops run SPEC --target local --run-id RUN --tracking-uri URI [--smoke] [--set ...]`` with
   ``GPUOPS_IMAGE_DIGEST`` set. No host environment variable is passed in (no credentials).

``logs(follow=True)`` streams the container's output; when it ends (or on Ctrl-C) the container is
removed, a run left RUNNING is marked FAILED (or KILLED), and the host server stops.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpuops.errors import ExternalError, UsageError
from gpuops.targets.base import Job, JobState, LaunchRequest

DEFAULT_ENV = "pytorch"
_LOCAL_SCHEMES = ("sqlite:", "file:")


def _is_local_store(uri: str) -> bool:
    return uri.startswith(_LOCAL_SCHEMES) or "://" not in uri


def _default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _opt_path(value: object, env_var: str) -> Path | None:
    v = value if value not in (None, "") else os.environ.get(env_var)
    return Path(str(v)) if v else None


def _experiment_name(spec_path: Path) -> str:
    from gpuops.specs import read_yaml

    data = read_yaml(spec_path)
    name = data.get("name") if isinstance(data, dict) else None
    return str(name or spec_path.stem)


def _needs_gpu(spec_path: Path) -> bool:
    from gpuops.specs import read_yaml

    data = read_yaml(spec_path)
    res = data.get("resources") if isinstance(data, dict) else None
    return isinstance(res, dict) and str(res.get("device", "")).lower() == "cuda"


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
        self._servers: dict[str, Any] = {}

    # -- helpers ---------------------------------------------------------------------------
    def client(self) -> Any:
        if self._client is None:
            from gpuops.envs.build import docker_client

            self._client = docker_client()
        return self._client

    def _image(self, request: LaunchRequest) -> tuple[str, str, Any]:
        """(tag, image id, EnvSpec) of the image to run in."""
        from gpuops.envs import load_environment
        from gpuops.envs.build import BuildOptions, build_image
        from gpuops.envs.render import installs_gpuops

        opts = request.options
        env_name = str(opts.get("env") or request.env_name or DEFAULT_ENV)
        env_dir = Path(str(opts.get("env_dir") or "environments"))
        spec = load_environment(env_name, env_dir)
        if not installs_gpuops(spec):
            raise UsageError(
                f"environment {spec.name!r} has Python {spec.python}; gpuops (which runs the experiment "
                "in the "
                "container) needs Python >= 3.11", hint="use a pytorch environment: --env pytorch")
        if opts.get("image"):
            img = self.client().images.get(str(opts["image"]))
            return str(opts["image"]), img.id, spec
        build_opts = BuildOptions(
            base_image=str(opts.get("base_image") or os.environ.get("GPUOPS_BASE_IMAGE") or "") or None,
            wheelhouse=_opt_path(opts.get("wheelhouse"), "GPUOPS_WHEELHOUSE"),
            ca_cert=_opt_path(opts.get("ca_cert"), "GPUOPS_CA_CERT"),
            allow_untested=bool(opts.get("allow_untested", False)),
        )
        built = build_image(spec, build_opts, client=self.client())
        return built.tag, built.image_id, spec

    # -- verbs -----------------------------------------------------------------------------
    def launch(self, request: LaunchRequest) -> Job:
        import docker

        from gpuops.envs.build import has_nvidia_runtime

        spec_path = Path(request.spec_path).resolve()
        if not spec_path.is_file():
            raise UsageError(f"{request.spec_path}: no such experiment spec")
        tag, image_id, env = self._image(request)
        client = self.client()
        gpus = has_nvidia_runtime(client) and env.cuda is not None
        if _needs_gpu(spec_path) and not gpus:
            raise ExternalError(
                f"{spec_path.name} asks for a GPU (resources.device: cuda) but "
                + ("this Docker Engine has no NVIDIA runtime" if env.cuda else f"{env.name} is a CPU image"),
                hint=_gpu_fix() if env.cuda else "use a CUDA environment (--env pytorch)")

        uri = request.tracking_uri or _default_tracking_uri()
        server = None
        if _is_local_store(uri):
            from gpuops.tracking.server import start_server

            server = start_server(uri if "://" in uri or uri.startswith("sqlite:") else f"file:{uri}")
            run_uri = server.url
        else:
            run_uri = uri
        try:
            run_id = request.run_id or self._create_run(run_uri, spec_path, tag, image_id, env.name)
            job = self._start_container(request, spec_path, tag, image_id, run_id, run_uri,
                                        host_net=server is not None, gpus=gpus)
        except BaseException:
            if server is not None:
                server.stop()
            raise
        job.details.update({"image": tag, "image_digest": image_id, "env": env.name, "tracking_uri": uri,
                            "server_url": run_uri if server is not None else ""})
        if server is not None:
            self._servers[job.job_id] = server
        del docker
        return job

    def _create_run(self, uri: str, spec_path: Path, tag: str, image_id: str, env: str) -> str:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        name = _experiment_name(spec_path)
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(name)
        run = client.create_run(exp_id, tags={
            "gpuops.target": "docker", "env.image_digest": image_id, "gpuops.image": tag, "gpuops.env": env,
        })
        return str(run.info.run_id)

    def _start_container(self, request: LaunchRequest, spec_path: Path, tag: str, image_id: str,
                         run_id: str, uri: str, *, host_net: bool, gpus: bool) -> Job:
        import docker

        cwd = Path.cwd().resolve()
        out_dir = cwd / "gpuops-out" / run_id
        out_dir.mkdir(parents=True, exist_ok=True)
        out_dir.chmod(0o777)  # the image's user (uid 1000) writes here
        volumes = {str(cwd): {"bind": str(cwd), "mode": "ro"},
                   str(out_dir): {"bind": str(out_dir), "mode": "rw"}}
        if not spec_path.is_relative_to(cwd):
            volumes[str(spec_path.parent)] = {"bind": str(spec_path.parent), "mode": "ro"}
        cmd = ["gpuops", "run", str(spec_path), "--target", "local", "--run-id", run_id,
               "--tracking-uri", uri]
        if request.smoke:
            cmd.append("--smoke")
        for o in request.overrides:
            cmd += ["--set", o]
        kwargs: dict[str, Any] = {
            "command": cmd, "detach": True, "working_dir": str(cwd), "volumes": volumes,
            "environment": {"GPUOPS_IMAGE_DIGEST": image_id, "GPUOPS_OUTPUT_DIR": str(out_dir),
                            "MLFLOW_TRACKING_URI": uri, "NO_COLOR": "1"},
            "labels": {"org.gpuops.run_id": run_id, "org.gpuops.image": tag},
            "network_mode": "host" if host_net else None,
        }
        if gpus:
            kwargs["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
        container = self.client().containers.run(tag, **{k: v for k, v in kwargs.items() if v is not None})
        return Job(target="docker", job_id=container.id, run_id=run_id,
                   details={"output_dir": str(out_dir), "started": time.time()})

    def _container(self, job: Job) -> Any | None:
        import docker.errors

        try:
            return self.client().containers.get(job.job_id)
        except docker.errors.NotFound:
            return None

    def status(self, job: Job) -> JobState:
        if "exit_code" in job.details:
            if job.details.get("killed"):
                return JobState.KILLED
            return JobState.SUCCEEDED if job.details["exit_code"] == 0 else JobState.FAILED
        c = self._container(job)
        if c is None:
            return JobState.UNKNOWN
        c.reload()
        state = c.attrs.get("State", {})
        if state.get("Running"):
            return JobState.RUNNING
        if state.get("Status") == "created":
            return JobState.PENDING
        return JobState.SUCCEEDED if state.get("ExitCode") == 0 else JobState.FAILED

    def logs(self, job: Job, follow: bool = False) -> Iterator[str]:
        c = self._container(job)
        if c is None:
            return
        finished = False
        try:
            buf = b""
            for chunk in c.logs(stream=True, follow=follow, stdout=True, stderr=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    yield line.decode(errors="replace")
            if buf:
                yield buf.decode(errors="replace")
            finished = True
        finally:
            if follow:
                if finished:
                    self._finish(job)
                else:  # Ctrl-C, or the caller stopped reading
                    self.stop(job)

    def _finish(self, job: Job) -> None:
        c = self._container(job)
        code = 1
        if c is not None:
            code = int(c.wait(timeout=60).get("StatusCode", 1))
            c.remove(force=True)
        job.details["exit_code"] = code
        if code != 0:
            self._mark(job, "FAILED", f"container exited with status {code}")
        self._stop_server(job)

    def stop(self, job: Job) -> None:
        """Stop and remove the container, mark the run KILLED, stop the host-side server."""
        c = self._container(job)
        if c is not None:
            try:
                c.stop(timeout=10)
            finally:
                c.remove(force=True)
        job.details["exit_code"] = 130
        job.details["killed"] = True
        self._mark(job, "KILLED", "stopped (Ctrl-C)")
        self._stop_server(job)

    def _mark(self, job: Job, status: str, error: str) -> None:
        """End a run the container left RUNNING (it died before it could say so)."""
        if not job.run_id:
            return
        uri = str(job.details.get("server_url") or job.details.get("tracking_uri") or "")
        if not uri:
            return
        try:
            from mlflow.tracking import MlflowClient

            from gpuops.tracking.tracker import clip_error

            client = MlflowClient(tracking_uri=uri)
            run = client.get_run(job.run_id)
            if run.info.status in {"RUNNING", "SCHEDULED"}:
                client.set_tag(job.run_id, "gpuops.error", clip_error(error))
                client.set_terminated(job.run_id, status=status)
        except Exception as e:  # the run's state is reported, never a crash on the way out
            job.details["mark_error"] = f"{type(e).__name__}: {e}"

    def _stop_server(self, job: Job) -> None:
        server = self._servers.pop(job.job_id, None)
        if server is not None:
            server.stop()
