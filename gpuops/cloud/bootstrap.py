"""Render the EC2 user-data bootstrap from ``bootstrap.sh.tmpl``.

Every value goes into the script shell-quoted (``shlex.quote``), so a spec name or an override
with spaces or quotes cannot break or inject into the script. The helper ``agent.py`` is shipped
inside the script gzip+base64 encoded to stay well under EC2's 16 KB user-data limit.

Nothing secret is ever an input here: the config model has no field for a credential, and
``render_user_data`` refuses a tracking URI that carries a user name or password.
"""

from __future__ import annotations

import base64
import gzip
import math
import re
import shlex
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gpuops.errors import UsageError

USER_DATA_LIMIT = 16 * 1024  # bytes, before base64: the EC2 limit for user data
DEFAULT_HOME = "/opt/gpuops"


class BootstrapConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    region: str
    bucket: str
    prefix: str
    spec_name: str  # the spec's file name inside the inputs bundle
    tracking_uri: str
    max_hours: float = Field(gt=0)
    image: str = ""  # empty: run `gpuops run` directly on the host (tests; AMIs with gpuops)
    resume: bool = False
    extra_args: list[str] = Field(default_factory=list)  # e.g. ["--smoke", "--set", "train.lr=1e-4"]
    home: str = DEFAULT_HOME
    s3_endpoint: str = ""  # only for S3-compatible endpoints (tests); empty = AWS S3
    imds_endpoint: str = "http://169.254.169.254"
    sync_seconds: int = 60
    grace_seconds: int = 90  # a spot notice comes two minutes before the reclaim

    @field_validator("tracking_uri")
    @classmethod
    def _no_userinfo(cls, v: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(v)
        if parts.username or parts.password:
            raise ValueError(
                "a tracking URI without user name or password (credentials never go into user data)"
            )
        return v

    @property
    def max_minutes(self) -> int:
        return max(1, math.ceil(self.max_hours * 60))


def agent_source() -> str:
    return resources.files("gpuops.cloud").joinpath("agent.py").read_text(encoding="utf-8")


def _agent_b64() -> str:
    packed = base64.b64encode(gzip.compress(agent_source().encode(), mtime=0)).decode()
    return "\n".join(packed[i : i + 76] for i in range(0, len(packed), 76))


def render_user_data(cfg: BootstrapConfig) -> str:
    template = resources.files("gpuops.cloud").joinpath("bootstrap.sh.tmpl").read_text(encoding="utf-8")
    q = shlex.quote
    values = {
        "RUN_ID": q(cfg.run_id),
        "MAX_MINUTES": str(cfg.max_minutes),
        "HOME": q(cfg.home),
        "REGION": q(cfg.region),
        "BUCKET": q(cfg.bucket),
        "S3_ENDPOINT": q(cfg.s3_endpoint),
        "IMDS": q(cfg.imds_endpoint),
        "PREFIX": q(cfg.prefix),
        "IMAGE": q(cfg.image),
        "SPEC": q(cfg.spec_name),
        "RESUME": "1" if cfg.resume else "0",
        "SYNC_SECONDS": str(int(cfg.sync_seconds)),
        "GRACE_SECONDS": str(int(cfg.grace_seconds)),
        "EXTRA_ARGS": " ".join(q(a) for a in cfg.extra_args),
        "TRACKING_URI": q(cfg.tracking_uri),
        "AGENT_B64": _agent_b64(),
    }
    # one pass, so that a value that happens to contain "@@NAME@@" is never expanded again
    out = re.sub(r"@@([A-Z0-9_]+)@@", lambda m: values[m.group(1)], template)
    size = len(out.encode())
    if size > USER_DATA_LIMIT:
        raise UsageError(
            f"the rendered bootstrap is {size} bytes, over EC2's {USER_DATA_LIMIT}-byte user-data limit",
            hint="shorten the --set overrides",
        )
    return out
