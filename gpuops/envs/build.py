"""Builder verbs: render / build / push, through the Docker Engine API (the docker Python SDK).

How secrets stay out of the image. The SDK's build endpoint has no BuildKit session, so no
``--secret`` mounts. Instead ``build_image`` starts a small HTTP server on 127.0.0.1 for the length
of one build (``BuildFileServer``: a random path, the CA bundle from ``--ca-cert`` and the
``--wheelhouse`` folder), and the build runs with host networking. The one RUN step that touches the
network fetches the CA into /tmp, uses it for apt and pip, and deletes it before the step ends, so
no layer (not even an intermediate one in the build cache) holds it; the server and its one-time URL
are gone when the build returns. Wheels are streamed the same way, so a 200 MB torch wheel is never
part of the build context or a layer.

The tag is content-addressed (``gpuops/<env>:<hash>``, see ``render.image_hash``); when that tag
exists already, ``build_image`` returns at once without talking to the builder.
"""

from __future__ import annotations

import html
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from gpuops import __version__
from gpuops.envs import EnvSpec
from gpuops.envs.images import save_selfcheck
from gpuops.envs.lock import require_lock
from gpuops.envs.render import Rendered, image_hash, image_repo, render
from gpuops.envs.selfcheck import selfcheck_in_image
from gpuops.envs.validate import EnvCheck, require_valid
from gpuops.errors import ExternalError, UsageError

LABEL = "org.gpuops"


@dataclass
class BuildOptions:
    base_image: str | None = None
    wheelhouse: Path | None = None
    ca_cert: Path | None = None
    allow_untested: bool = False
    selfcheck: bool = True
    gpus: bool | None = None  # None = when the engine has the nvidia runtime


@dataclass
class BuiltImage:
    env: str
    tag: str
    image_id: str
    spec_hash: str
    cached: bool
    labels: dict[str, str]
    selfcheck: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "env": self.env, "tag": self.tag, "image_id": self.image_id, "spec_hash": self.spec_hash,
            "cached": self.cached, "labels": self.labels, "selfcheck": self.selfcheck,
            "warnings": self.warnings, "seconds": round(self.seconds, 2),
        }


@dataclass
class Plan:
    """Everything decided before talking to the engine: what ``--print`` shows and what gets tagged."""

    spec: EnvSpec
    rendered: Rendered
    check: EnvCheck
    lock_text: str
    wheel_names: list[str]
    spec_hash: str

    @property
    def tag(self) -> str:
        return f"{image_repo(self.spec)}:{self.spec_hash[:12]}"

    def labels(self) -> dict[str, str]:
        s = self.spec
        return {
            f"{LABEL}.env": s.name,
            f"{LABEL}.spec_hash": self.spec_hash,
            f"{LABEL}.version": __version__,
            f"{LABEL}.kb_version": self.check.facts.get("kb_version", "unknown"),
            f"{LABEL}.framework": s.framework,
            f"{LABEL}.framework_version": s.framework_version,
            f"{LABEL}.cuda": s.cuda or "none",
            f"{LABEL}.cudnn": s.cudnn or "none",
            f"{LABEL}.python": s.python,
            f"{LABEL}.base_image": self.rendered.base.image,
            f"{LABEL}.gpuops_installed": "true" if self.rendered.with_gpuops else "false",
            f"{LABEL}.driver_min": self.check.facts.get("driver_min", "none"),
        }


def _wheel_names(wheelhouse: Path | None) -> list[str]:
    if wheelhouse is None:
        return []
    if not wheelhouse.is_dir():
        raise UsageError(f"--wheelhouse {wheelhouse}: not a folder")
    return sorted(p.name for p in wheelhouse.iterdir() if p.suffix in {".whl", ".gz", ".zip"})


def plan_build(spec: EnvSpec, opts: BuildOptions) -> Plan:
    """Validate against the KB, render, check the lock, compute the content hash. No engine needed."""
    check = require_valid(spec, opts.allow_untested)
    wheel_names = _wheel_names(opts.wheelhouse)
    rendered = render(spec, base_image=opts.base_image, wheelhouse=bool(wheel_names))
    lock = require_lock(spec)
    h = image_hash(spec, rendered, lock.text, wheel_names)
    plan = Plan(spec, rendered, check, lock.text, wheel_names, h)
    in_file = {"env", "framework", "framework_version", "cuda", "cudnn", "python"}
    extra = {k: v for k, v in plan.labels().items() if k.split(".", 2)[-1] not in in_file}
    plan.rendered = render(spec, base_image=opts.base_image, wheelhouse=bool(wheel_names), extra_labels=extra)
    return plan


# -- the build-time file server ----------------------------------------------------------------
class BuildFileServer:
    """Serves the CA bundle and the wheelhouse on 127.0.0.1 under a random path, for one build."""

    def __init__(self, ca_cert: Path | None, wheelhouse: Path | None) -> None:
        self.ca = ca_cert.read_bytes() if ca_cert is not None else None
        self.wheelhouse = wheelhouse
        self.token = secrets.token_hex(16)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # the library never prints
                return

            def do_GET(self) -> None:
                prefix = f"/{server.token}/"
                if not self.path.startswith(prefix):
                    self.send_error(404)
                    return
                rest = urllib.parse.unquote(self.path[len(prefix):])
                if rest == "ca.crt" and server.ca is not None:
                    self._send(server.ca, "application/x-pem-file")
                elif rest in {"wheels", "wheels/"}:
                    names = _wheel_names(server.wheelhouse)
                    body = "".join(f'<a href="{urllib.parse.quote(n)}">{html.escape(n)}</a><br>\n'
                                   for n in names)
                    self._send(f"<html><body>\n{body}</body></html>\n".encode(), "text/html")
                elif rest.startswith("wheels/") and server.wheelhouse is not None:
                    name = rest[len("wheels/"):]
                    p = server.wheelhouse / name
                    if "/" in name or name not in _wheel_names(server.wheelhouse):
                        self.send_error(404)
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(p.stat().st_size))
                    self.end_headers()
                    with p.open("rb") as f:
                        shutil.copyfileobj(f, self.wfile)
                else:
                    self.send_error(404)

            def _send(self, body: bytes, ctype: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{self.token}"

    def __enter__(self) -> BuildFileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- engine ----------------------------------------------------------------------------------------
def docker_client(timeout: int = 900) -> Any:
    try:
        import docker
    except ImportError:
        raise UsageError("the docker SDK is missing: pip install 'gpuops[docker]'") from None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as e:
        raise ExternalError(
            f"no Docker Engine answers ({e.__class__.__name__}: {e})",
            hint="start dockerd (sudo systemctl start docker) or set DOCKER_HOST",
        ) from None
    return client


def has_nvidia_runtime(client: Any) -> bool:
    try:
        return "nvidia" in (client.info().get("Runtimes") or {})
    except Exception:
        return False


def find_image(client: Any, tag: str) -> Any | None:
    import docker.errors

    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def _checkout_root() -> Path | None:
    import gpuops

    root = Path(gpuops.__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def build_gpuops_wheel(dest: Path) -> Path:
    """A wheel of this gpuops checkout, for installing gpuops into the image."""
    root = _checkout_root()
    if root is None:
        raise UsageError("gpuops goes into the image as a wheel of its source checkout, and none was found",
                         hint="run gpuops build from a clone of the gpuops repository (pip install -e .)")
    with tempfile.TemporaryDirectory(prefix="gpuops-wheel-") as tmp:
        # Build from a copy of the package sources only: no build/ or egg-info left in the checkout.
        src = Path(tmp) / "src"
        src.mkdir()
        shutil.copy2(root / "pyproject.toml", src / "pyproject.toml")
        if (root / "README.md").is_file():
            shutil.copy2(root / "README.md", src / "README.md")
        shutil.copytree(root / "gpuops", src / "gpuops",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        res = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
             "-w", str(dest), str(src)],
            capture_output=True, text=True, timeout=300,
        )
        if res.returncode != 0:
            raise ExternalError(f"building the gpuops wheel failed: {res.stderr.strip()[-500:]}")
    wheels = sorted(dest.glob("gpuops-*.whl"))
    if not wheels:
        raise ExternalError("pip wheel produced no gpuops wheel")
    return wheels[-1]


def _short_error(text: str) -> str:
    """The engine repeats the whole RUN script in its error; keep the step's exit status only."""
    import re

    m = re.match(r"The command '.*' returned a non-zero code: (\d+)$", text, re.S)
    return f"a RUN step exited with status {m.group(1)}" if m else text


def _stage_context(plan: Plan, ctx: Path) -> None:
    (ctx / "Dockerfile").write_text(plan.rendered.dockerfile, encoding="utf-8")
    stage = ctx / "gpuops-build"
    stage.mkdir()
    (stage / "requirements.lock.txt").write_text(plan.lock_text, encoding="utf-8")
    if plan.rendered.with_gpuops:
        build_gpuops_wheel(stage)


def build_image(
    spec: EnvSpec,
    opts: BuildOptions,
    *,
    client: Any | None = None,
    on_line: Callable[[str], None] | None = None,
) -> BuiltImage:
    """Build (or find) ``gpuops/<env>:<hash>``. ``on_line`` receives the engine's build output lines."""
    import time

    t0 = time.monotonic()
    plan = plan_build(spec, opts)
    warnings = [p.render() for p in plan.check.untested]
    client = client or docker_client()
    existing = find_image(client, plan.tag)
    if existing is not None:
        from gpuops.envs.images import load_selfcheck

        return BuiltImage(spec.name, plan.tag, existing.id, plan.spec_hash, True, dict(existing.labels or {}),
                          load_selfcheck(plan.tag), warnings, time.monotonic() - t0)
    if opts.ca_cert is not None and not opts.ca_cert.is_file():
        raise UsageError(f"--ca-cert {opts.ca_cert}: no such file")
    image_id = None
    errors: list[str] = []
    tail: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gpuops-ctx-") as tmp:
        ctx = Path(tmp)
        _stage_context(plan, ctx)
        with BuildFileServer(opts.ca_cert, opts.wheelhouse) as server:
            stream = client.api.build(
                path=str(ctx), tag=plan.tag, rm=True, forcerm=True, pull=False,
                network_mode="host", buildargs={"GPUOPS_BUILD_URL": server.url}, decode=True,
            )
            for event in stream:
                if "stream" in event:
                    for line in str(event["stream"]).splitlines():
                        tail = ([*tail, line])[-30:]
                        if on_line is not None and line.strip():
                            on_line(line)
                elif "error" in event:
                    errors.append(_short_error(str(event["error"]).strip()))
                elif "aux" in event and isinstance(event["aux"], dict) and "ID" in event["aux"]:
                    image_id = event["aux"]["ID"]
    if errors or image_id is None:
        detail = "\n".join(tail[-15:])
        raise ExternalError(f"docker build of {plan.tag} failed: {'; '.join(errors) or 'no image produced'}"
                            + (f"\n{detail}" if detail else ""))
    image = client.images.get(plan.tag)
    result = BuiltImage(spec.name, plan.tag, image.id, plan.spec_hash, False, dict(image.labels or {}),
                        None, warnings)
    if opts.selfcheck:
        gpus = has_nvidia_runtime(client) if opts.gpus is None else opts.gpus
        result.selfcheck = selfcheck_in_image(client, plan.tag, spec.framework, gpus=gpus)
        save_selfcheck(plan.tag, image.id, result.selfcheck)
    result.seconds = time.monotonic() - t0
    return result


def push_image(built: BuiltImage, registry: str, *, client: Any | None = None) -> dict[str, str]:
    """Tag ``<registry>/gpuops-<env>:<hash>`` and push it; returns the remote reference and digest.

    ``registry`` is a host with an optional port and namespace (``registry.example.com:5000/team``),
    as in an image reference; credentials come from the engine's usual place (``docker login``).
    """
    import docker.errors

    if "://" in registry or not registry.strip("/"):
        raise UsageError(f"--push {registry!r}: expected a registry host[:port][/namespace], not a URL",
                         hint="e.g. --push 127.0.0.1:5000 or --push registry.example.com/team")
    client = client or docker_client()
    repo = f"{registry.strip('/')}/gpuops-{built.env}"
    version = built.tag.rsplit(":", 1)[1]
    digest = None
    try:
        client.images.get(built.tag).tag(repo, version)
        for event in client.images.push(repo, tag=version, stream=True, decode=True):
            if "error" in event:
                raise ExternalError(f"push to {repo}:{version} failed: {event['error']}")
            aux = event.get("aux") or {}
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = aux["Digest"]
    except docker.errors.DockerException as e:  # a bad reference, the engine gone mid-push
        raise ExternalError(f"push to {repo}:{version} failed: {e}") from None
    if not digest:
        raise ExternalError(f"push to {repo}:{version}: the engine reported no digest")
    return {"reference": f"{repo}:{version}", "digest": digest}


def labels_json(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True)
