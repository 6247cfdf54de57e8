"""``gpuops doctor --against RUN_ID``: this machine's environment next to the one a tracked run had.

Every run made by ``gpuops run`` carries the environment fingerprint of the machine it ran on as
``env.*`` tags (``gpuops.doctor.fingerprint``). Here the same fingerprint is taken of this machine (a
quick live capture, or a saved capture given to ``--replay``) and the two are compared key by key.
Then the knowledge base says whether the run's framework build (its torch wheel, ``env.torch`` /
``env.torch_cuda``) still fits this machine: the driver against the CUDA the build was made with,
and every GPU here against the compute capabilities the build carries kernels for.

The comparison itself (:func:`compare_environment`) needs no MLflow; :func:`run_environment` reads a
run's tags, and imports MLflow only when it is called.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from gpuops.doctor.fingerprint import KEYS, UNKNOWN

if TYPE_CHECKING:
    from gpuops.knowledge.kb import KnowledgeBase
    from gpuops.knowledge.models import SourceRef, Verdict

LABELS = {
    "env.gpu": "GPU",
    "env.gpu_cc": "compute capability",
    "env.gpu_count": "GPU count",
    "env.driver": "driver",
    "env.cuda_driver": "CUDA (driver API)",
    "env.torch": "torch build",
    "env.torch_cuda": "torch CUDA",
    "env.cudnn": "cuDNN",
    "env.python": "Python",
    "env.os": "OS",
    "env.kernel": "kernel",
    "env.cpu": "CPU",
    "env.in_container": "in a container",
    "env.image_digest": "image digest",
}
# What decides whether a build runs and what it computes: driver, CUDA, cuDNN, framework build,
# GPU, container image. The other keys are listed too, after these.
MAJOR = ("env.driver", "env.cuda_driver", "env.cudnn", "env.torch", "env.torch_cuda", "env.gpu", "env.gpu_cc",
         "env.gpu_count", "env.image_digest")
_ABSENT = {None, "", UNKNOWN, "none", "not installed"}


@dataclass(frozen=True)
class Drift:
    """One fingerprint key whose value differs. ``run`` is None when the run has no such tag."""

    key: str
    label: str
    run: str | None
    here: str
    major: bool  # driver, CUDA, cuDNN, framework build, GPU or image digest


@dataclass(frozen=True)
class Source:
    """Where a verdict comes from (a key of the knowledge base's sources.yaml and its URL)."""

    key: str
    url: str | None
    status: str


@dataclass(frozen=True)
class BuildVerdict:
    """Whether the run's framework build fits this machine: True, False, or None (cannot tell)."""

    build: str | None  # "torch 2.1.0+cu121"; None when the run recorded none
    ok: bool | None
    reasons: list[str]
    sources: list[Source] = field(default_factory=list)


@dataclass(frozen=True)
class AgainstReport:
    run_id: str
    here: str  # "this machine", or the replayed capture
    differences: list[Drift]
    same: list[str]  # the keys with equal values
    verdict: BuildVerdict

    @property
    def identical(self) -> bool:
        return not self.differences

    @property
    def exit_code(self) -> int:
        """1 when the knowledge base says the run's build does not fit this machine, else 0."""
        return 1 if self.verdict.ok is False else 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["identical"] = self.identical
        return d


def _ccs(fp: dict[str, str], kb: KnowledgeBase) -> list[str]:
    """Compute capabilities of the GPUs of a fingerprint: its ``env.gpu_cc``, else looked up by name."""
    cc = fp.get("env.gpu_cc")
    if cc not in _ABSENT:
        return [c.strip() for c in str(cc).split(",") if c.strip()]
    out: list[str] = []
    for name in str(fp.get("env.gpu") or "").split(","):
        if name.strip() in _ABSENT:
            continue
        found = kb.gpu_cc(name.strip())
        if found and found not in out:
            out.append(found)
    return out


def _source(ref: SourceRef | None, into: list[Source]) -> None:
    if ref is not None and all(s.key != ref.key for s in into):
        into.append(Source(key=ref.key, url=ref.url, status=str(ref.status)))


def _worst(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    if a is None or b is None:
        return None
    return True


def build_verdict(run: dict[str, str], here: dict[str, str], kb: KnowledgeBase | None = None) -> BuildVerdict:
    """The knowledge base's verdict on the run's torch build (``run``'s ``env.torch`` and
    ``env.torch_cuda``) on the machine whose fingerprint is ``here``."""
    from gpuops.errors import UsageError

    if kb is None:
        from gpuops.knowledge import load_kb

        kb = load_kb()
    torch = run.get("env.torch")
    cuda = run.get("env.torch_cuda")
    if torch in _ABSENT:
        return BuildVerdict(build=None, ok=None, reasons=["the run recorded no torch build (env.torch)"])
    build = f"torch {torch}"
    if cuda == "cpu":
        return BuildVerdict(build=build, ok=True, reasons=["CPU build: it needs no GPU and no driver"])
    if cuda in _ABSENT:
        return BuildVerdict(build=build, ok=None, reasons=["the run recorded no CUDA version of its build"])
    assert cuda is not None
    run_gpus = run.get("env.gpu_count")
    if here.get("env.gpu_count") == "0" or here.get("env.gpu") == "none":
        if run_gpus == "0" or run.get("env.gpu") == "none":
            return BuildVerdict(build=build, ok=True, reasons=[
                f"no NVIDIA GPU here, nor on the run's machine: its CUDA {cuda} build ran on the CPU there "
                "too"])
        return BuildVerdict(build=build, ok=False, reasons=[
            f"no NVIDIA GPU here: the run's CUDA {cuda} build would run on the CPU only"])
    ok: bool | None = True
    reasons: list[str] = []
    sources: list[Source] = []
    driver = here.get("env.driver")
    if driver in _ABSENT:
        ok = None
        reasons.append("the NVIDIA driver version here is unknown (is a driver loaded?)")
    else:
        assert driver is not None
        v: Verdict | None = None
        try:
            v = kb.driver_supports_cuda(driver, cuda)
        except UsageError as e:
            ok = None
            reasons.append(f"cannot compare driver {driver} with CUDA {cuda}: {e.message}")
        if v is not None:
            ok = _worst(ok, v.ok)
            reasons.append(v.reason)
            _source(v.source, sources)
    ccs = _ccs(here, kb)
    if not ccs:
        ok = _worst(ok, None)
        reasons.append("the compute capability of the GPU here is unknown")
    else:
        base = str(torch).split("+")[0]
        try:
            al = kb.torch_arch_list(base, cuda)
        except UsageError:
            al = None
        if al is None:
            ok = _worst(ok, None)
            reasons.append(f"the knowledge base has no architecture list for torch {base} with CUDA {cuda}")
        else:
            _source(al.source, sources)
            for cc in ccs:
                sm = f"sm_{cc.replace('.', '')}"
                if kb.build_runs_on(cc, al.sms, al.ptx):
                    reasons.append(f"{sm} (the GPU here) is covered by the build's kernels")
                else:
                    ok = False
                    ptx = f", PTX {', '.join(al.ptx)}" if al.ptx else ""
                    reasons.append(f"{sm} (the GPU here) is not among the build's architectures "
                                   f"({', '.join(al.sms)}{ptx})")
    return BuildVerdict(build=build, ok=ok, reasons=reasons, sources=sources)


def compare_environment(run_id: str, run_tags: dict[str, str], here: dict[str, str], *,
                        here_name: str = "this machine", kb: KnowledgeBase | None = None) -> AgainstReport:
    """The fingerprint ``here`` next to a run's tags: every fingerprint key whose value differs (a
    key the run lacks counts as different), and the knowledge base's verdict on the run's build."""
    keys = list(KEYS) + sorted(k for k in here if k.startswith("env.") and k not in KEYS)
    diffs: list[Drift] = []
    same: list[str] = []
    for k in keys:
        mine = here.get(k, UNKNOWN)
        theirs = run_tags.get(k)
        if theirs == mine:
            same.append(k)
        else:
            diffs.append(Drift(key=k, label=LABELS.get(k, k.removeprefix("env.")), run=theirs, here=mine,
                               major=k in MAJOR))
    diffs.sort(key=lambda d: (not d.major, keys.index(d.key)))
    return AgainstReport(run_id=run_id, here=here_name, differences=diffs, same=same,
                         verdict=build_verdict(run_tags, here, kb))


def run_environment(run_ref: str, tracking_uri: str | None = None) -> tuple[str, dict[str, str]]:
    """(full run id, tags) of the run ``run_ref`` (an id or a unique prefix) in the store of
    ``tracking_uri`` (``MLFLOW_TRACKING_URI``, else ./mlflow.db). A sqlite store that does not exist
    is an error, not a new empty store."""
    from gpuops.errors import UsageError
    from gpuops.tracking.runs import resolve_run_id
    from gpuops.tracking.store import sqlite_file
    from gpuops.tracking.tracker import check_server, redact_uri, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_file(uri)
    if db is not None and not db.is_file():
        raise UsageError(f"no MLflow store at {db}",
                         hint="give the store the run is in: --tracking-uri URI (or MLFLOW_TRACKING_URI)")
    check_server(uri)
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
    except Exception as e:
        raise UsageError(f"cannot open the MLflow store {redact_uri(uri)}: {type(e).__name__}") from None
    run_id = resolve_run_id(client, run_ref)
    tags = dict(client.get_run(run_id).data.tags)
    if not any(k.startswith("env.") for k in tags):
        raise UsageError(f"run {run_id} has no env.* tags: it was not made by gpuops run, so its machine "
                         "is not known")
    return run_id, tags
