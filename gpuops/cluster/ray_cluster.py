"""Connecting to a Ray cluster, or starting a local one for the length of a command.

``ray_session(address)`` is the one entry point:

* an address (``--ray-address``, else ``RAY_ADDRESS``): connect to that cluster, and disconnect at
  the end (the cluster keeps running);
* no address: start a Ray instance on this machine for the command and shut it down after it. Its
  node address, every port and the dashboard are bound to 127.0.0.1.

Ray turns a node address of 127.0.0.1 into the host's reachable address on Linux (see
``ray._private.services.resolve_ip_for_localhost`` in Ray 2.60). The switch that keeps loopback is
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (Ray's own name for single-machine mode): set here before Ray
is imported, for a local instance and for a loopback address.

Token authentication (Ray >= 2.52, https://docs.ray.io/en/latest/ray-security/token-auth.html):
``RAY_AUTH_MODE=token`` with the token in ``RAY_AUTH_TOKEN`` or in the file ``RAY_AUTH_TOKEN_PATH``.
Ray reads both from the environment itself; gpuops only checks that a token is there when the mode
asks for one, never puts it in a message, a tag or a trainer's environment. Ray reads the token when
it is first imported, so it must be in the environment before that (the CLI gets it from the shell).
Ray >= 2.59 also turns token auth on by itself for a local instance, creating ``~/.ray/auth_token``.
A dashboard that answers without a token on an address other than loopback is a warning: whoever
reaches it can run code on the cluster.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuops.errors import ExternalError, UsageError

ADDRESS_ENV = "RAY_ADDRESS"
AUTH_MODE_ENV = "RAY_AUTH_MODE"
AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Variables a trainer child never needs and must not see (they would end up in its logs or tags).
SECRET_ENV = (AUTH_TOKEN_ENV,)


@dataclass
class NodeInfo:
    node_id: str
    address: str  # the node's IP as Ray knows it
    hostname: str
    alive: bool
    gpus: float
    cpus: float
    is_head: bool


@dataclass
class ClusterInfo:
    address: str | None  # None: a local instance started for this command
    started_here: bool
    nodes: list[NodeInfo]
    total_gpus: float
    free_gpus: float
    auth_mode: str  # "token" | "disabled"
    dashboard_url: str | None
    warnings: list[str] = field(default_factory=list)


def resolve_address(address: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """``--ray-address`` first, then ``RAY_ADDRESS``; None means: start a local instance."""
    env = os.environ if environ is None else environ
    chosen = (address or env.get(ADDRESS_ENV) or "").strip()
    return chosen or None


def _host_of(address: str) -> str:
    """The host part of ``ray://h:p``, ``http://h:p``, ``h:p`` or ``h``."""
    parsed = urllib.parse.urlsplit(address if "://" in address else f"//{address}")
    return parsed.hostname or ""


def is_loopback(host: str) -> bool:
    if host in {"localhost", ""}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_mode(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return "token" if env.get(AUTH_MODE_ENV, "").strip().lower() == "token" else "disabled"


def check_auth(environ: Mapping[str, str] | None = None) -> str:
    """The auth mode, after checking that ``RAY_AUTH_MODE=token`` comes with a token to send.
    Only whether a token is set is looked at: its value never leaves the environment here."""
    env = os.environ if environ is None else environ
    mode = auth_mode(env)
    if mode == "token" and not env.get(AUTH_TOKEN_ENV) and not env.get(AUTH_TOKEN_PATH_ENV):
        home = env.get("HOME") or os.path.expanduser("~")
        default = os.path.join(home, ".ray", "auth_token")  # Ray's default token file
        if not os.path.isfile(default):
            raise UsageError(f"{AUTH_MODE_ENV}=token but no token: neither {AUTH_TOKEN_ENV} nor "
                             f"{AUTH_TOKEN_PATH_ENV} is set, and {default} does not exist",
                             hint=f"export {AUTH_TOKEN_ENV} (from your secret store), or "
                                  "`ray get-auth-token` on the cluster")
    return mode


def redact_token(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with the Ray token (from the environment) replaced by ``***``."""
    env = os.environ if environ is None else environ
    token = env.get(AUTH_TOKEN_ENV, "")
    return text.replace(token, "***") if len(token) >= 3 else text


def trainer_env(base: Mapping[str, str]) -> dict[str, str]:
    """The environment for a trainer child started by a Ray task: ``base`` without the Ray token."""
    return {k: v for k, v in base.items() if k not in SECRET_ENV}


def dashboard_open_warning(dashboard_url: str | None, mode: str, timeout: float = 3.0) -> str | None:
    """A warning when the dashboard at ``dashboard_url`` is on a non-loopback address and answers
    an API request that carries no token (``/api/version``). None when it is on loopback, token auth
    is on, or it does not answer."""
    if not dashboard_url:
        return None
    url = dashboard_url if "://" in dashboard_url else f"http://{dashboard_url}"
    host = _host_of(url)
    if is_loopback(host):
        return None
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/api/version", timeout=timeout) as r:  # no token sent
            answered = 200 <= r.status < 300
    except urllib.error.HTTPError as e:
        answered = e.code < 400
    except (OSError, ValueError):
        return None
    if not answered:
        return None
    why = "token authentication is off" if mode != "token" else "it answered without a token"
    return (f"the Ray dashboard at {url} is reachable on a non-loopback address and {why}: anyone who "
            "can reach it can submit jobs and run code on the cluster. Set RAY_AUTH_MODE=token on "
            "every node (https://docs.ray.io/en/latest/ray-security/token-auth.html), or bind it to "
            "127.0.0.1 (--dashboard-host) and use an SSH tunnel")


def _keep_loopback() -> None:
    """Ask Ray to keep a 127.0.0.1 node address (single-machine mode); see the module docstring."""
    if "ray" not in sys.modules:
        os.environ[LOOPBACK_ENV] = "0"
        return
    with contextlib.suppress(Exception):  # Ray already imported: its constant is read at call time
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise UsageError(f"Ray is not installed ({e})", hint="pip install 'gpuops[ray]'") from None
    return ray


class RaySession:
    """A connection to Ray for the length of a ``with`` block (see ``ray_session``)."""

    def __init__(self, address: str | None, started_here: bool, mode: str, dashboard_url: str | None,
                 warnings: list[str]) -> None:
        self.address = address
        self.started_here = started_here
        self.auth_mode = mode
        self.dashboard_url = dashboard_url
        self.warnings = warnings

    @property
    def ray(self) -> Any:
        import ray

        return ray

    def gpus(self) -> tuple[float, float]:
        """(free, total) GPUs of the whole cluster, as Ray's scheduler counts them now."""
        ray = self.ray
        total = float(ray.cluster_resources().get("GPU", 0.0))
        free = float(ray.available_resources().get("GPU", 0.0))
        return free, total

    def nodes(self, alive_only: bool = True) -> list[NodeInfo]:
        out = []
        for n in self.ray.nodes():
            if alive_only and not n.get("Alive"):
                continue
            res = n.get("Resources") or {}
            out.append(NodeInfo(node_id=str(n["NodeID"]), address=str(n.get("NodeManagerAddress", "")),
                                hostname=str(n.get("NodeManagerHostname", "")), alive=bool(n.get("Alive")),
                                gpus=float(res.get("GPU", 0.0)), cpus=float(res.get("CPU", 0.0)),
                                is_head="node:__internal_head__" in res))
        return out

    def info(self) -> ClusterInfo:
        free, total = self.gpus()
        return ClusterInfo(address=self.address, started_here=self.started_here, nodes=self.nodes(),
                           total_gpus=total, free_gpus=free, auth_mode=self.auth_mode,
                           dashboard_url=self.dashboard_url, warnings=list(self.warnings))


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_gpus: float | None = None, num_cpus: int | None = None,
                dashboard: bool = True, runtime_env: dict[str, Any] | None = None,
                environ: Mapping[str, str] | None = None) -> Iterator[RaySession]:
    """Connect to the cluster at ``address`` (or ``RAY_ADDRESS``), or start a local Ray instance
    bound to 127.0.0.1 when there is neither; disconnect (and stop the local instance) at the end.

    ``num_gpus``/``num_cpus`` apply to a local instance only (None: what Ray detects). A driver
    already connected in this process (``ray.is_initialized()``) is used as it is and left alone."""
    env = os.environ if environ is None else environ
    mode = check_auth(env)
    chosen = resolve_address(address, env)
    ray = None
    if "ray" in sys.modules:
        ray = sys.modules["ray"]
        if ray.is_initialized():
            yield _session_for(ray, chosen, started_here=False, mode=mode)
            return
    if chosen is None or chosen == "local" or is_loopback(_host_of(chosen)):
        _keep_loopback()
    ray = _import_ray()
    kwargs: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
    if runtime_env:
        kwargs["runtime_env"] = runtime_env
    started_here = chosen is None or chosen == "local"
    t0 = time.monotonic()
    try:
        if started_here:
            ray.init(address="local", num_gpus=num_gpus, num_cpus=num_cpus, include_dashboard=dashboard,
                     dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1", **kwargs)
        else:
            ray.init(address=chosen, **kwargs)
    except Exception as e:
        where = "a local Ray instance" if started_here else f"the Ray cluster at {chosen}"
        raise ExternalError(f"could not connect to {where} after {time.monotonic() - t0:.0f} s: "
                            f"{redact_token(f'{type(e).__name__}: {e}', env)}",
                            hint="check `ray status` on the head node, and RAY_ADDRESS") from None
    if auth_mode(os.environ) == "token":  # Ray >= 2.59 turns it on for a local instance by itself
        mode = "token"
    try:
        yield _session_for(ray, chosen, started_here=started_here, mode=mode)
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()  # disconnects; for a local instance it also stops its processes


def _session_for(ray: Any, address: str | None, *, started_here: bool, mode: str) -> RaySession:
    url = None
    with contextlib.suppress(Exception):
        ctx = ray.get_runtime_context()
        url = getattr(ctx, "dashboard_url", None) or None
    if url is None:
        with contextlib.suppress(Exception):
            from ray._private.worker import global_worker

            url = global_worker.node.address_info.get("webui_url") or None
    warnings = []
    warning = dashboard_open_warning(url, mode)
    if warning:
        warnings.append(warning)
    return RaySession(None if started_here else address, started_here, mode, url, warnings)
