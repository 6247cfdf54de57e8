"""``Tracker``: the one door to MLflow for training runs, with fixed verbs start / log / finish.

It talks to MLflow through ``MlflowClient`` (no global "active run" state), so the parent CLI,
the training child and the torchrun ranks can all address the same run by id.

Store: ``--tracking-uri`` / ``MLFLOW_TRACKING_URI``, else MLflow's default local store
``sqlite:///<cwd>/mlflow.db`` with artifacts in ``mlruns/`` beside the database.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpuops.errors import ExternalError, UsageError

# Metric names (fixed: ``gpuops compare`` reads these).
TRAIN_LOSS = "train/loss"
TRAIN_THROUGHPUT = "train/throughput"
VAL_PSNR = "val/psnr"
VAL_SSIM = "val/ssim"
VAL_PSNR_BICUBIC = "val/psnr_bicubic"
VAL_SSIM_BICUBIC = "val/ssim_bicubic"
VAL_ACCURACY = "val/accuracy"
VAL_LOSS = "val/loss"

STATUSES = ("FINISHED", "FAILED", "KILLED")
# Keys that name a credential: "secret", "token", "password", "credential" anywhere; "key" and
# "auth" as a word of the key ("api_key", "tracking.tags.key", "x-auth") but not inside one ("monkey").
_SECRET = re.compile(r"(secret|token|passw(or)?d|passwd|credential|(^|[^a-z])(api|access|private)?[_-]?key"
                     r"($|[^a-z])|(^|[^a-z])auth($|[^a-z]|orization))", re.I)
# userinfo of a URI: scheme://user:password@ or scheme://token@
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@:\s]*)(?P<pw>:[^/\s]*)?@")


def default_tracking_uri() -> str:
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    resolved = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    remember_secrets(resolved)
    return resolved


# Passwords seen in tracking URIs in this process: ``redact_text`` hides them wherever they appear,
# also where a library quotes them outside a URI.
_KNOWN_SECRETS: set[str] = set()


def remember_secrets(uri: str) -> None:
    from urllib.parse import unquote

    for m in _USERINFO.finditer(uri):
        pw = m.group("pw")
        secret = pw[1:] if pw is not None else m.group("user")
        for s in {secret, unquote(secret)}:
            if len(s) >= 3:
                _KNOWN_SECRETS.add(s)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET.search(key))


def _hide(m: re.Match[str]) -> str:
    user, pw = m.group("user"), m.group("pw")
    if pw is None:  # scheme://token@host: the whole userinfo may be the secret
        return f"{m.group('scheme')}***@"
    return f"{m.group('scheme')}{user}:***@"


def redact_uri(uri: str) -> str:
    """A tracking URI fit for showing or tagging: ``user:password@`` becomes ``user:***@``."""
    return _USERINFO.sub(_hide, uri)


def redact_text(text: str) -> str:
    """Any text (a message, a traceback) with the password of every URI in it hidden, and every
    password of a tracking URI this process used."""
    if "://" in text:
        text = _USERINFO.sub(_hide, text)
    for secret in sorted(_KNOWN_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def redact(mapping: Mapping[str, Any]) -> dict[str, str]:
    """Drop values whose key looks like a credential; strip userinfo from URLs."""
    out: dict[str, str] = {}
    for k, v in mapping.items():
        if is_secret_key(k):
            continue
        s = str(v)
        if "://" in s:
            s = redact_uri(s)
        out[k] = s
    return out


def sqlite_artifact_root(uri: str) -> str | None:
    """For a ``sqlite:///path/x.db`` store: the ``mlruns`` folder beside it, as a file URI."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///"):])
    return (db.parent / "mlruns").resolve().as_uri()


def check_server(uri: str, timeout: float = 3.0) -> None:
    """For an ``http(s)://`` tracking URI: the server answers its ``/health`` endpoint within
    ``timeout`` seconds, or one ``UsageError`` line (exit 2). MLflow's own client would retry for
    minutes (its default retry policy) before failing with a traceback."""
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    # credentials go in a header, never in the URL that errors could echo
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    req = urllib.request.Request(url, method="GET")
    if parts.username or parts.password:
        import base64

        token = base64.b64encode(f"{parts.username or ''}:{parts.password or ''}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read(64)
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise UsageError(f"the MLflow tracking server {redact_uri(uri)} refused the credentials "
                             f"(HTTP {e.code})") from None
        # a server behind a proxy without /health still answers: it is reachable
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise UsageError(
            f"the MLflow tracking server {redact_uri(uri)} is not reachable: {redact_text(str(reason))}",
            hint="start it (`mlflow server`), fix --tracking-uri / MLFLOW_TRACKING_URI, or leave both "
            "unset for the local store (./mlflow.db)",
        ) from None


class Tracker:
    """start -> log (any number of times) -> finish, for one MLflow run."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        from gpuops.tracking.store import ensure_sqlite_store

        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        check_server(self.tracking_uri)
        ensure_sqlite_store(self.tracking_uri)  # a new sqlite store: set up once, whole, under a lock
        from mlflow.tracking import MlflowClient

        try:
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
        except Exception as e:  # no driver for the database, an unknown scheme, ...
            first = (str(e).strip().splitlines() or [""])[0][:400]
            raise ExternalError(f"cannot open the MLflow store {redact_uri(self.tracking_uri)}: "
                                f"{type(e).__name__}: {redact_text(first)}") from None
        self.run_id: str | None = None
        self.experiment_id: str | None = None

    # -- start ------------------------------------------------------------------------------
    def experiment(self, name: str) -> str:
        """The id of experiment ``name``, created (artifacts beside a sqlite store) when missing."""
        try:
            return self._experiment(name)
        except Exception as e:  # the store is unreachable or refuses: one line, no password in it
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:400]
            raise ExternalError(f"the MLflow store {redact_uri(self.tracking_uri)} failed: "
                                f"{redact_text(first)}") from None

    def _experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        root = sqlite_artifact_root(self.tracking_uri)
        try:
            return self.client.create_experiment(name, artifact_location=(f"{root}/{name}" if root else None))
        except Exception:  # created by a concurrent run in the meantime
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def start(self, experiment: str | None = None, *, run_id: str | None = None,
              run_name: str | None = None, tags: Mapping[str, str] | None = None,
              parent_run_id: str | None = None) -> str:
        """Create a run in ``experiment``, or attach to the existing run ``run_id`` (resume /
        a run created by the caller) and mark it RUNNING again."""
        if run_id is not None:
            try:
                run = self.client.get_run(run_id)
            except Exception as e:
                raise UsageError(f"no MLflow run {run_id!r} in {redact_uri(self.tracking_uri)}") from e
            self.run_id = run_id
            self.experiment_id = run.info.experiment_id
            if run.info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            if tags:
                self.set_tags(tags)
            return run_id
        if experiment is None:
            raise UsageError("an experiment name or a run id is needed to start tracking")
        self.experiment_id = self.experiment(experiment)
        all_tags = dict(redact(tags or {}))
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        try:
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        except Exception as e:  # a server that is down, a store that cannot be written
            where = redact_uri(self.tracking_uri)
            raise ExternalError(f"could not create an MLflow run in {where}: {redact_text(str(e))}") from None
        self.run_id = run.info.run_id
        return self.run_id

    # -- log --------------------------------------------------------------------------------
    def _id(self) -> str:
        if self.run_id is None:
            raise RuntimeError("Tracker.start() first")
        return self.run_id

    def log(self, *, params: Mapping[str, Any] | None = None, metrics: Mapping[str, float] | None = None,
            step: int | None = None, tags: Mapping[str, str] | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        p = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
        m = [Metric(k, float(v), now, int(step or 0)) for k, v in (metrics or {}).items()]
        t = [RunTag(k, v[:5000]) for k, v in redact(tags or {}).items()]
        if p:
            p = self._new_params(p)
        for i in range(0, max(len(p), 1), 100):  # MLflow's batch limit is 100 params
            chunk = p[i:i + 100]
            if chunk or (i == 0 and (m or t)):
                self.client.log_batch(self._id(), metrics=m if i == 0 else [], params=chunk,
                                      tags=t if i == 0 else [])

    def _new_params(self, params: list[Any]) -> list[Any]:
        """Params are immutable in MLflow: skip the ones already logged (resume, a caller's run)."""
        have = self.client.get_run(self._id()).data.params
        return [x for x in params if x.key not in have]

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.log(params=params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.log(metrics=metrics, step=step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.log(tags=tags)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self._id(), str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self._id(), text, artifact_file)

    def log_image(self, image: Any, artifact_file: str) -> None:
        self.client.log_image(self._id(), image, artifact_file=artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(self._id(), figure, artifact_file)

    def download(self, artifact_path: str, dst: str | Path) -> Path:
        from mlflow.artifacts import download_artifacts

        return Path(download_artifacts(run_id=self._id(), artifact_path=artifact_path, dst_path=str(dst),
                                       tracking_uri=self.tracking_uri))

    def tags(self) -> dict[str, str]:
        return dict(self.client.get_run(self._id()).data.tags)

    def status(self) -> str:
        return self.client.get_run(self._id()).info.status

    # -- finish -----------------------------------------------------------------------------
    def finish(self, status: str = "FINISHED", error: str | None = None) -> None:
        """End the run as FINISHED, FAILED or KILLED; an error text goes to the ``gpuops.error``
        tag (its first line and the last of the rest, 5,000 characters in all, see
        :func:`clip_error`) and to the artifact ``error.txt`` (whole)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        run_id = self._id()
        if status != "FINISHED":
            # A Ctrl-C that landed inside a write to a sqlite store leaves that connection, with its
            # open transaction, alive in a reference cycle until the garbage collector runs; every
            # other connection then waits out sqlite's busy time-out (20 s) and fails, and the run
            # ends without its error text. Collecting now closes it (tests/run/test_tracker_interrupt.py).
            import gc

            gc.collect()
        if error:
            try:
                self.client.set_tag(run_id, "gpuops.error", clip_error(error))
                self.client.log_text(run_id, error, "error.txt")
            except Exception:  # the status below matters more than the text
                pass
        self.client.set_terminated(run_id, status=status)


def clip_error(error: str, limit: int = 5000) -> str:
    """``error`` cut to ``limit`` characters for a tag: the first line says what happened (the
    exit code, the exception) and is kept; the end of a log or traceback is kept after it."""
    if len(error) <= limit:
        return error
    head, _, rest = error.partition("\n")
    head = head[: limit // 2]
    keep = max(limit - len(head) - 5, 0)
    return f"{head}\n…\n{rest[-keep:]}" if keep else head


def mark_if_running(tracking_uri: str, run_id: str, status: str, error: str | None = None) -> bool:
    """Set a terminal status on ``run_id`` unless something already did. True if it was RUNNING."""
    tr = Tracker(tracking_uri)
    tr.run_id = run_id
    if tr.status() != "RUNNING":
        return False
    tr.finish(status, error)
    return True
