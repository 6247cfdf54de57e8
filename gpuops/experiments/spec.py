"""The experiment spec: what ``experiments/*.yaml`` may say, validated by pydantic.

The built-in tasks (``sr``, ``classify``) share the same outer shape (``name``, ``task``, ``seed``,
``data``, ``model``, ``train``, ``eval``, ``tracking``, ``resources``); ``task`` picks the schema of
``data``, ``model`` and ``eval``. ``task: script`` runs the user's own training code instead: an
``entrypoint`` (argv with ``{params.x}``, ``{data.x}``, ``{outputs}``, ``{seed}`` placeholders), its
``params``, an optional ``env`` (an ``environments/*.yaml``), named ``data`` folders, an ``outputs``
folder, output ``metrics`` patterns and the ``smoke`` params (see ``ScriptExperiment``).

``load_experiment(path, overrides, smoke=...)`` reads the YAML, applies ``--set key=value``
overrides, validates (one ``SpecError`` line naming file, field path and what was expected),
applies the ``--smoke`` reductions, resolves relative data paths (the spec file's folder first,
then the repository root, then the working directory) and computes the spec hash.

The hash is the SHA-256 of the canonical resolved spec (JSON, sorted keys) with the data paths
as the spec wrote them, so that the same experiment gets the same hash on the host and inside a
container where the checkout lives somewhere else.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gpuops.errors import SpecError, UsageError
from gpuops.specs import read_yaml, validate


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# Bounds that no real experiment comes near, so that an absurd value (batch_size: 1e9, a seed of
# -1) is a clear spec error before a run exists rather than a run that FAILED after minutes.
MAX_BATCH = 65_536
MAX_ITERATIONS = 100_000_000
MAX_EPOCHS = 100_000
MAX_SEED = 2**31 - 1  # numpy's seeds are 32-bit; gpuops adds the DDP rank
MAX_PATCH = 1024
MAX_PATCHES = 2_000_000
MAX_PATCH_POOL_BYTES = 16 * 1024**3  # sampling=random keeps inputs and targets in memory
MAX_COUNT = 10_000_000  # subsets, image counts
# MLflow's own limits (mlflow/utils/validation.py, MLflow 3.x): experiment names 500 characters,
# tag keys 250, tag values 8,000; tag keys of "/ \w . - : space" only, no ".." or leading "/".
# Experiment names are also folder names under mlruns/ (255 bytes on most filesystems): 200 here.
MAX_NAME = 200
MAX_RUN_NAME = 250
MAX_TAG_KEY = 250
MAX_TAG_VALUE = 5000  # what gpuops keeps of a tag (Tracker.log); MLflow allows 8,000
MAX_TAGS = 100
MAX_PATH = 4096
_TAG_KEY = re.compile(r"^[/\w.\- :]+$")
# Tags gpuops sets itself: a spec may not set them (mlflow.* are MLflow's system tags).
RESERVED_TAG_PREFIXES = ("mlflow.", "gpuops.", "env.")
RESERVED_TAGS = frozenset({"spec.hash", "spec.name", "spec.task", "git.commit", "git.dirty"})


def _check_path(v: str) -> str:
    if not v or not v.strip():
        raise ValueError("a folder path (not empty)")
    if len(v) > MAX_PATH:
        raise ValueError(f"a path of at most {MAX_PATH} characters")
    if any(ord(c) < 32 for c in v):
        raise ValueError("a path without NUL or other control characters")
    return v


# --------------------------------------------------------------------------- shared sections
class TrainSpec(_Strict):
    """How long and how to optimise. Exactly one of ``iterations`` and ``epochs``."""

    iterations: int | None = Field(None, ge=1, le=MAX_ITERATIONS)
    epochs: int | None = Field(None, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "cosine", "step", "onecycle"] = "constant"
    warmup: int = Field(0, ge=0, le=MAX_ITERATIONS)  # iterations of linear warm-up
    # schedule=step: multiply lr by gamma every N iterations
    step_every: int | None = Field(None, ge=1, le=MAX_ITERATIONS)
    gamma: float = Field(0.1, gt=0, le=1)
    grad_clip: float | None = Field(None, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # classify only
    # classify: train on the first N examples of a seeded shuffle
    subset: int | None = Field(None, ge=1, le=MAX_COUNT)
    log_every: int = Field(50, ge=1, le=MAX_ITERATIONS)
    checkpoint_every: int = Field(0, ge=0, le=MAX_ITERATIONS)  # iterations; 0 = no intermediate checkpoints

    @model_validator(mode="after")
    def _one_length(self) -> TrainSpec:
        if (self.iterations is None) == (self.epochs is None):
            raise ValueError("exactly one of train.iterations and train.epochs")
        return self


class TrackingSpec(_Strict):
    experiment: str | None = None  # MLflow experiment; default: the spec's name
    run_name: str | None = Field(None, min_length=1, max_length=MAX_RUN_NAME)
    tags: dict[str, str] = Field(default_factory=dict, max_length=MAX_TAGS)
    system_metrics: bool | None = None  # None: on when an NVIDIA GPU is present

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, v: str | None) -> str | None:
        if v is not None:
            _check_name(v)
        return v

    @field_validator("run_name")
    @classmethod
    def _run_name(cls, v: str | None) -> str | None:
        if v is not None and any(ord(c) < 32 for c in v):
            raise ValueError("a run name without control characters")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not key or len(key) > MAX_TAG_KEY or not _TAG_KEY.match(key):
                raise ValueError(f"tag keys of at most {MAX_TAG_KEY} letters, digits, '_', '-', '.', ':', "
                                 f"'/' and spaces (MLflow's rule), got {key[:80]!r}")
            if ".." in key.split("/") or key.startswith("/") or key != key.strip():
                raise ValueError(f"a tag key that is not a path going elsewhere, got {key[:80]!r}")
            if key.startswith(RESERVED_TAG_PREFIXES) or key in RESERVED_TAGS:
                raise ValueError(f"a tag key of your own: {key!r} is reserved (mlflow.*, gpuops.*, env.*, "
                                 "spec.*, git.* are set by MLflow and gpuops)")
            if len(value) > MAX_TAG_VALUE:
                raise ValueError(f"tag values of at most {MAX_TAG_VALUE} characters "
                                 f"({key!r} has {len(value)})")
        return v


class ResourcesSpec(_Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16/fp16: autocast on CUDA only
    gpus: int = Field(1, ge=1, le=64)  # > 1: torchrun with DDP (nccl on GPU, gloo on CPU)
    threads: int | None = Field(None, ge=1, le=1024)  # torch CPU threads
    channels_last: bool = False  # CUDA only


# --------------------------------------------------------------------------- super-resolution
class SRData(_Strict):
    train: str = "data/T91"
    eval: str = "data/Set5"
    scale: int = Field(3, ge=2, le=8)
    colour: Literal["y", "rgb"] = "y"
    patch: int = Field(33, ge=8, le=MAX_PATCH)  # HR patch size
    stride: int = Field(14, ge=1, le=MAX_PATCH)  # sampling=grid
    sampling: Literal["grid", "random"] = "grid"
    patches: int = Field(20000, ge=1, le=MAX_PATCHES)  # sampling=random: size of the patch pool drawn once
    augment: bool = False  # sampling=random: flips and 90° rotations
    train_images: int | None = Field(None, ge=1, le=MAX_COUNT)  # use the first N training images

    @field_validator("train", "eval")
    @classmethod
    def _paths(cls, v: str) -> str:
        return _check_path(v)


class SRModel(_Strict):
    arch: Literal["srcnn", "fsrcnn", "espcn", "vdsr"] = "srcnn"
    layers: str | None = None  # "64x9x9_32x5x5_1x5x5"; None = the arch's preset
    activation: Literal["relu", "leaky_relu"] = "relu"
    padding: Literal["valid", "same"] = "valid"
    batch_norm: bool = False
    residual: bool = False  # espcn/fsrcnn: add the bicubic enlargement of the input to the output

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from gpuops.sr.layers import parse_layers

        parse_layers(v)  # ValueError with a clear message on a bad string
        return v


class SREval(_Strict):
    every: int | None = Field(None, ge=1)  # iterations; None = only at the end
    panels: bool = True  # bicubic | model | ground truth images as artifacts
    # Evaluate on the centre crop (this many HR pixels square) of each image instead of the whole
    # image; the whole-image bicubic baseline is then logged too, as val/psnr_bicubic_full.
    crop: int | None = Field(None, ge=16, le=16384)


# --------------------------------------------------------------------------- classification
class ClassifyData(_Strict):
    dataset: Literal["cifar10", "digits"] = "cifar10"
    root: str = "data/cifar10"  # cifar-10-python.tar.gz or cifar-10-batches-py/ in here
    augment: bool = True  # random crop (padding) + horizontal flip
    test_subset: int | None = Field(None, ge=1, le=MAX_COUNT)  # evaluate on the first N test examples

    @field_validator("root")
    @classmethod
    def _paths(cls, v: str) -> str:
        return _check_path(v)


class ClassifyModel(_Strict):
    arch: Literal["cnn10", "resnet20", "resnet18", "fast"] = "resnet20"


class ClassifyEval(_Strict):
    every: int | None = Field(None, ge=1)  # iterations; None = only at the end
    tta_flip: bool = False  # average logits over the image and its mirror
    batch_size: int = Field(1000, ge=1, le=MAX_BATCH)


class SweepSpec(_Strict):
    """Defaults for ``gpuops sweep`` (``--param`` on the command line replaces them)."""

    param: str  # a dotted spec key, e.g. train.subset
    values: list[int | float | str] = Field(min_length=1, max_length=1000)
    metric: str | None = None  # what the plot shows; default val/accuracy or val/psnr


# --------------------------------------------------------------------------- experiments
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _check_name(v: str) -> str:
    if len(v) > MAX_NAME:
        raise ValueError(f"a name of at most {MAX_NAME} characters (got {len(v)})")
    if not _NAME.match(v) or ".." in v:
        raise ValueError("a name of letters, digits, '_', '.', '-'")
    return v


class _Named(_Strict):
    """What every task's spec has: its name, how it is tracked, what it needs, how it is swept."""

    name: str
    description: str = Field("", max_length=10_000)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    sweep: SweepSpec | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v)


class _Experiment(_Named):
    train: TrainSpec


class SRExperiment(_Experiment):
    task: Literal["sr"]
    data: SRData = Field(default_factory=SRData)
    model: SRModel = Field(default_factory=SRModel)
    eval: SREval = Field(default_factory=SREval)


class ClassifyExperiment(_Experiment):
    task: Literal["classify"]
    data: ClassifyData = Field(default_factory=ClassifyData)
    model: ClassifyModel = Field(default_factory=ClassifyModel)
    eval: ClassifyEval = Field(default_factory=ClassifyEval)


# --------------------------------------------------------------------------- the user's own script
MAX_ARGV = 1000
MAX_ARG = 32_768  # characters in one argument: more than any real command line needs
MAX_PARAMS = 200
MAX_METRICS = 100
MAX_CODE = 100
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a params / data key: also a placeholder and an env name
ParamValue = bool | int | float | str


def _check_key(v: str, what: str) -> str:
    if not _KEY.match(v) or len(v) > 100:
        raise ValueError(f"{what} names of letters, digits and '_' (not starting with a digit), "
                         f"got {v[:80]!r}")
    return v


class MetricPatternSpec(_Strict):
    """A metric read from the script's output, as SageMaker's metric definitions do: every line
    (stdout and stderr) that ``regex`` matches gives one value of metric ``name``. The regex has
    one capture group (the number), or the named groups ``value`` and, optionally, ``step``;
    without a step group the step counts the metric's matches (1, 2, ...)."""

    name: str = Field(min_length=1, max_length=MAX_TAG_KEY)
    regex: str = Field(min_length=1, max_length=1000)
    log: bool = True  # false: for the progress display only (the script logs this metric to MLflow itself)

    @field_validator("name")
    @classmethod
    def _metric_name(cls, v: str) -> str:
        if not _TAG_KEY.match(v) or ".." in v.split("/") or v.startswith("/"):
            raise ValueError(f"a metric name of letters, digits, '_', '-', '.', ':', '/' and spaces "
                             f"(MLflow's rule), got {v[:80]!r}")
        return v

    @field_validator("regex")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            rx = re.compile(v)
        except re.error as e:
            raise ValueError(f"a Python regular expression ({e})") from None
        names = set(rx.groupindex)
        if "value" in names:
            if names - {"value", "step"}:
                raise ValueError("named groups 'value' and 'step' only")
        elif rx.groups != 1:
            raise ValueError(f"a regex with exactly one capture group for the number (this one has "
                             f"{rx.groups}), or named groups (?P<value>...) and (?P<step>...)")
        return v


class ScriptExperiment(_Named):
    """``task: script``: the user's own training code, run as a process and tracked like a built-in
    experiment. See ``gpuops.scripts`` for how it is started and supervised."""

    task: Literal["script"]
    # argv; "python" (or "python3") as the first item is the environment's interpreter
    entrypoint: list[str] = Field(min_length=1, max_length=MAX_ARGV)
    params: dict[str, ParamValue] = Field(default_factory=dict, max_length=MAX_PARAMS)
    env: str | None = None  # environments/<env>.yaml; None = the interpreter running gpuops
    data: dict[str, str] = Field(default_factory=dict, max_length=MAX_PARAMS)  # name -> folder
    outputs: str | None = "outputs"  # relative to the run's working folder; logged as artifacts
    metrics: list[MetricPatternSpec] = Field(default_factory=list, max_length=MAX_METRICS)
    smoke: dict[str, ParamValue] = Field(default_factory=dict, max_length=MAX_PARAMS)  # params --smoke sets
    code: list[str] = Field(default_factory=list, max_length=MAX_CODE)  # more source files/folders to log

    @field_validator("entrypoint")
    @classmethod
    def _argv(cls, v: list[str]) -> list[str]:
        for arg in v:
            if len(arg) > MAX_ARG:
                raise ValueError(f"arguments of at most {MAX_ARG} characters")
            if "\0" in arg:
                raise ValueError("arguments without NUL characters")
        if not v[0].strip():
            raise ValueError("a program to run as the first item (e.g. python)")
        return v

    @field_validator("params", "smoke")
    @classmethod
    def _params(cls, v: dict[str, ParamValue]) -> dict[str, ParamValue]:
        for key, value in v.items():
            _check_key(key, "parameter")
            if isinstance(value, str) and len(value) > MAX_TAG_VALUE:
                raise ValueError(f"parameter values of at most {MAX_TAG_VALUE} characters ({key!r})")
        return v

    @field_validator("data")
    @classmethod
    def _data(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            _check_key(key, "data folder")
            _check_path(value)
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if v.endswith((".yaml", ".yml")):
            return _check_path(v)
        if not re.match(r"^[a-z0-9][a-z0-9._-]*$", v) or len(v) > MAX_NAME:
            raise ValueError("an environment name (environments/<name>.yaml) or a path to its .yaml file")
        return v

    @field_validator("outputs")
    @classmethod
    def _outputs(cls, v: str | None) -> str | None:
        if v is None:
            return v
        _check_path(v)
        parts = Path(v).parts
        if Path(v).is_absolute() or ".." in parts:
            raise ValueError("a folder relative to the run's working folder, without '..' (e.g. outputs)")
        return v

    @field_validator("code")
    @classmethod
    def _code(cls, v: list[str]) -> list[str]:
        for item in v:
            _check_path(item)
        return v

    @model_validator(mode="after")
    def _unique_metrics(self) -> ScriptExperiment:
        names = [m.name for m in self.metrics]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"one pattern per metric name (repeated: {', '.join(dup)})")
        return self


ExperimentSpec = SRExperiment | ClassifyExperiment | ScriptExperiment
AnySpec = SRExperiment | ClassifyExperiment | ScriptExperiment
_TASKS: dict[str, type[SRExperiment] | type[ClassifyExperiment] | type[ScriptExperiment]] = {
    "sr": SRExperiment,
    "classify": ClassifyExperiment,
    "script": ScriptExperiment,
}


@dataclass
class ResolvedExperiment:
    """A validated spec with its data paths resolved, plus where it came from."""

    spec: SRExperiment | ClassifyExperiment | ScriptExperiment
    source: str  # the spec file
    spec_hash: str
    overrides: list[str] = field(default_factory=list)
    smoke: bool = False

    @property
    def experiment_name(self) -> str:
        return self.spec.tracking.experiment or self.spec.name

    def to_dict(self) -> dict[str, Any]:
        """The document stored as the run's ``spec.yaml`` (enough to resume the run). Tags with a
        secret-looking key (they are never logged as tags) and their overrides are left out."""
        spec = self.spec.model_dump(mode="json")
        tracking = spec.get("tracking") or {}
        tracking["tags"] = {k: v for k, v in (tracking.get("tags") or {}).items() if not is_secret_key(k)}
        return {
            "spec": spec,
            "source": self.source,
            "spec_hash": self.spec_hash,
            "overrides": self.public_overrides(),
            "smoke": self.smoke,
        }

    def public_overrides(self) -> list[str]:
        """``--set`` items, without those whose key looks like a credential."""
        return [o for o in self.overrides if not is_secret_key(o.partition("=")[0].strip())]

    def params(self) -> dict[str, str]:
        """The whole resolved spec, flattened: ``model.layers``, ``train.lr``, ... (secret-named
        keys left out)."""
        return {k: v for k, v in flatten(self.spec.model_dump(mode="json")).items() if not is_secret_key(k)}


def is_secret_key(key: str) -> bool:
    """A key that names a credential (token, secret, password, key, credential, ...)."""
    from gpuops.tracking.tracker import is_secret_key as _is_secret

    return _is_secret(key)


def resolved_from_dict(doc: dict[str, Any], where: str = "spec.yaml") -> ResolvedExperiment:
    """Rebuild a ``ResolvedExperiment`` from ``to_dict()`` output (``--resume``, the worker)."""
    if not isinstance(doc, dict) or "spec" not in doc:
        raise SpecError(where, "spec", "a resolved gpuops experiment document")
    spec = _validate_task(where, doc["spec"])
    return ResolvedExperiment(spec=spec, source=str(doc.get("source", where)),
                              spec_hash=str(doc.get("spec_hash", "")),
                              overrides=list(doc.get("overrides") or []), smoke=bool(doc.get("smoke")))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        elif isinstance(v, list | dict):
            out[key] = json.dumps(v, sort_keys=True)
        else:
            out[key] = str(v)
    return out


# --------------------------------------------------------------------------- overrides
def parse_override(item: str) -> tuple[list[str], Any]:
    """``train.lr=1e-4`` -> (["train", "lr"], 0.0001); the value is read as YAML."""
    import yaml

    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not p for p in key.split(".")):
        raise UsageError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. train.lr=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise UsageError(f"--set {item!r}: {part!r} is not a section")
            node = nxt
        node[path[-1]] = value
    return out


# --------------------------------------------------------------------------- smoke
def smoke_overrides(task: str) -> dict[str, dict[str, Any]]:
    """What ``--smoke`` changes: a few iterations on a few examples, the whole path still run.

    Super-resolution keeps the whole evaluation set (Set5), so the summary carries the real
    bicubic baseline; classification switches to scikit-learn's digits (offline).
    """
    common_train = {"iterations": 4, "epochs": None, "log_every": 2, "checkpoint_every": 2,
                    "warmup": 0}
    if task == "sr":
        return {
            "train": {**common_train, "batch_size": 16},
            "data": {"sampling": "random", "patches": 128, "train_images": 4},
            "eval": {"every": None},
        }
    if task == "sr-deep":  # VDSR's 20 layers take about a minute on whole Set5 on 2 CPU cores
        return {**smoke_overrides("sr"), "eval": {"every": None, "crop": 96}}
    return {
        "train": {**common_train, "batch_size": 32, "subset": 256},
        "data": {"dataset": "digits", "test_subset": None},
        "eval": {"every": None, "batch_size": 512},
    }


def _apply_smoke(data: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    task = out["task"]
    if task == "script":  # the spec says what its smoke run is: params overrides
        out.setdefault("params", {}).update(out.get("smoke") or {})
        return out
    if task == "sr" and (out.get("model") or {}).get("arch") == "vdsr":
        task = "sr-deep"
    for section, values in smoke_overrides(task).items():
        sec = out.setdefault(section, {})
        sec.update(values)
    return out


# --------------------------------------------------------------------------- loading
def _validate_task(path: str | Path, data: Any) -> AnySpec:
    if not isinstance(data, dict):
        raise SpecError(path, "", "a mapping of experiment fields", type(data).__name__)
    task = data.get("task")
    if not isinstance(task, str) or task not in _TASKS:
        raise SpecError(path, "task", f"one of {', '.join(_TASKS)}", task)
    return validate(path, data, _TASKS[task])


def find_repo_root(start: Path) -> Path | None:
    for p in [start, *start.parents]:
        if (p / "pyproject.toml").is_file() or (p / ".git").exists():
            return p
    return None


def resolve_data_path(value: str, spec_dir: Path) -> Path | None:
    """The first existing of: absolute path; spec folder / value; repo root / value; cwd / value."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return p if p.exists() else None
    roots = [spec_dir]
    repo = find_repo_root(spec_dir)
    if repo is not None:
        roots.append(repo)
    roots.append(Path.cwd())
    for root in roots:
        cand = (root / p).resolve()
        if cand.exists():
            return cand
    return None


def _data_paths(spec: SRExperiment | ClassifyExperiment) -> list[str]:
    if isinstance(spec, SRExperiment):
        return ["train", "eval"]
    return ["root"] if spec.data.dataset == "cifar10" else []


def spec_hash(spec: AnySpec) -> str:
    canon = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def load_experiment(path: str | Path, overrides: list[str] | None = None, *, smoke: bool = False,
                    download: bool = False) -> ResolvedExperiment:
    """Read, override, validate, smoke-reduce, resolve and hash an experiment spec.

    Raises ``SpecError``/``UsageError`` (exit code 2) before anything is tracked.
    """
    path = Path(path)
    overrides = list(overrides or [])
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(path, "", "a mapping of experiment fields", type(raw).__name__)
    data = apply_overrides(raw, overrides)
    spec = _validate_task(path, data)  # validate as written first: errors name the user's fields
    if isinstance(spec, ScriptExperiment):
        _check_script_overrides(path, raw, overrides)
    if smoke:  # the reductions, then the user's --set again (they win: --smoke --set train.iterations=50)
        smoked = apply_overrides(_apply_smoke(spec.model_dump(mode="json")), overrides)
        spec = _validate_task(path, smoked)
    if isinstance(spec, ScriptExperiment):
        h = spec_hash(spec)
        spec = _resolve_script(path, spec)
        return ResolvedExperiment(spec=spec, source=str(path.resolve()), spec_hash=h, overrides=overrides,
                                  smoke=smoke)
    _cross_checks(path, spec)
    h = spec_hash(spec)

    spec_dir = path.resolve().parent
    data_fields = dict(spec.data)
    for name in _data_paths(spec):
        value = data_fields[name]
        found = resolve_data_path(value, spec_dir)
        if found is None:
            if name == "root" and download:
                p = Path(value).expanduser()
                found = p if p.is_absolute() else (spec_dir / p).resolve()
            elif name == "root":
                raise SpecError(path, f"data.{name}", "a folder holding cifar-10-python.tar.gz or "
                                "cifar-10-batches-py/ (relative to the spec's folder; --download fetches it)",
                                value)
            else:
                raise SpecError(path, f"data.{name}", "an existing image folder (looked beside the spec, "
                                "in the repository root and in the working directory)", value)
        data_fields[name] = str(found)
    spec = spec.model_copy(update={"data": spec.data.model_copy(update=data_fields)})
    _check_data(path, spec, download=download, smoke=smoke)
    return ResolvedExperiment(spec=spec, source=str(path.resolve()), spec_hash=h, overrides=overrides,
                              smoke=smoke)


# Kernel and device trees: reading "images" there blocks, never ends or reads hardware.
FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")
MAX_DECODED = 100  # images fully decoded per folder; the rest are checked by their headers (verify)


def _under(path: Path, root: str) -> bool:
    return path == Path(root) or Path(root) in path.parents


def _check_folder(spec_file: Path, field: str, folder: Path, raw: str) -> Path:
    real = Path(os.path.realpath(folder))
    for root in FORBIDDEN_ROOTS:
        if _under(real, root):
            raise SpecError(spec_file, field, f"a data folder outside {', '.join(FORBIDDEN_ROOTS)}", raw)
    if not real.is_dir():
        raise SpecError(spec_file, field, "a folder (this is a file)", raw)
    if not os.access(real, os.R_OK | os.X_OK):
        raise SpecError(spec_file, field, "a folder this user can read (permission denied)", raw)
    return real


def _check_images(spec_file: Path, field: str, folder: Path, raw: str, *, first: int | None,
                  min_side: int, why: str) -> None:
    """Every image the trainer will read from ``folder`` opens, decodes and is at least
    ``min_side`` pixels on both sides (the images are listed as ``gpuops.sr.data`` lists them)."""
    from PIL import Image, UnidentifiedImageError

    from gpuops.sr.data import IMAGE_SUFFIXES

    try:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as e:
        raise SpecError(spec_file, field, f"a readable image folder ({e.strerror or e})", raw) from None
    if not files:
        raise SpecError(spec_file, field, f"a folder of images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                        "it has none", raw)
    used = files[:first] if first else files
    for i, p in enumerate(used):
        try:
            with Image.open(p) as im:
                w, h = im.size
                if i < MAX_DECODED:
                    im.load()  # a truncated or corrupt file fails here, not minutes into a run
                else:
                    im.verify()
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
            raise SpecError(spec_file, field, f"decodable images; {p.name} is not ({reason})", raw) from None
        if min(w, h) < min_side:
            raise SpecError(spec_file, field, f"images of at least {min_side}x{min_side} pixels ({why}); "
                            f"{p.name} is {w}x{h}", raw)


def _check_data(spec_file: Path, spec: SRExperiment | ClassifyExperiment, *, download: bool,
                smoke: bool = False) -> None:
    """Data that the run would only find wrong after it exists. Under ``--smoke`` (digits instead
    of the spec's data set) a ``train.subset`` larger than the data set is capped, and the run logs
    the number it trained on (``data.train_examples``)."""
    if isinstance(spec, SRExperiment):
        d = spec.data
        for name, first in (("train", d.train_images), ("eval", None)):
            raw = getattr(d, name)
            folder = _check_folder(spec_file, f"data.{name}", Path(raw), raw)
            _check_images(spec_file, f"data.{name}", folder, raw, first=first, min_side=d.patch,
                          why=f"data.patch is {d.patch}")
        channels = 1 if d.colour == "y" else 3
        if d.sampling == "random":
            pool = d.patches * d.patch * d.patch * channels * 4 * 2  # float32 inputs and targets
            if pool > MAX_PATCH_POOL_BYTES:
                raise SpecError(spec_file, "data.patches", f"a patch pool that fits in memory (at most "
                                f"{MAX_PATCH_POOL_BYTES // 1024**3} GiB; {d.patches} patches of {d.patch}x"
                                f"{d.patch} take {pool / 1024**3:.0f} GiB)", d.patches)
    else:
        if spec.data.dataset == "cifar10":
            root = Path(spec.data.root)
            if root.exists() or not download:
                _check_folder(spec_file, "data.root", root, spec.data.root)
        if spec.train.subset and not smoke:
            from gpuops.classify.data import train_size

            n = train_size(spec.data.dataset)
            if spec.train.subset > n:
                raise SpecError(spec_file, "train.subset", f"at most {n}: the {spec.data.dataset} training "
                                f"set has {n} examples", spec.train.subset)


def _cross_checks(path: Path, spec: SRExperiment | ClassifyExperiment) -> None:
    if isinstance(spec, SRExperiment) and spec.model.layers is not None:
        from gpuops.sr.layers import parse_layers

        layers = parse_layers(spec.model.layers)
        want = 1 if spec.data.colour == "y" else 3
        last = getattr(layers[-1], "filters", None)
        if last is not None and last != want:
            raise SpecError(path, "model.layers", f"a last layer with {want} filter(s) for "
                            f"data.colour={spec.data.colour}", spec.model.layers)
    if spec.train.schedule == "step" and spec.train.step_every is None:
        raise SpecError(path, "train.step_every", "a number of iterations when train.schedule is step")


# --------------------------------------------------------------------------- task: script
PYTHON_NAMES = re.compile(r"^python(3(\.\d+)?)?$")  # "python", "python3", "python3.11": the env's Python
_PLACEHOLDER = re.compile(r"\{(params|data)\.([^{}]*)\}|\{(outputs|seed)\}")


def script_file_index(argv: list[str]) -> int | None:
    """The position of the script file in ``argv``: the program itself when it is a path
    (``./train.sh``), the first non-option argument after a Python interpreter (``python -u
    train.py``), None for ``python -m module`` / ``-c code`` or a program found on PATH."""
    if PYTHON_NAMES.match(argv[0]):
        skip = False
        for i, arg in enumerate(argv[1:], start=1):
            if skip:  # the value of -W / -X
                skip = False
                continue
            if arg.startswith(("-m", "-c")):
                return None
            if arg in ("-W", "-X"):
                skip = True
                continue
            if arg.startswith("-"):
                continue
            return i
        return None
    return 0 if "/" in argv[0] else None


def placeholders(arg: str) -> list[tuple[str, str]]:
    """``("params", "lr")``, ``("data", "train")``, ``("outputs", "")``, ``("seed", "")`` in ``arg``."""
    out = []
    for m in _PLACEHOLDER.finditer(arg):
        out.append((m.group(1), m.group(2)) if m.group(1) else (m.group(3), ""))
    return out


def find_environment_file(value: str, spec_dir: Path) -> Path | None:
    """``env:`` as a path to a .yaml (resolved like a data path), or a name looked up as
    ``environments/<name>.yaml`` in the repository root of the spec, then in the working directory."""
    if value.endswith((".yaml", ".yml")):
        return resolve_data_path(value, spec_dir)
    roots = [r for r in (find_repo_root(spec_dir), Path.cwd()) if r is not None]
    for root in roots:
        cand = root / "environments" / f"{value}.yaml"
        if cand.is_file():
            return cand.resolve()
    return None


def _check_script_overrides(path: Path, raw: dict[str, Any], overrides: list[str]) -> None:
    """``--set params.x=...`` (and a sweep's values) may only change a parameter the spec declares:
    a typo would otherwise reach no placeholder and change nothing."""
    declared = raw.get("params") if isinstance(raw.get("params"), dict) else {}
    for item in overrides:
        keys, _ = parse_override(item)
        if keys[0] == "params" and len(keys) == 2 and keys[1] not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise SpecError(path, f"params.{keys[1]}", f"a parameter the spec declares under params: "
                            f"(declared: {known})", item)


def _resolve_script(path: Path, spec: ScriptExperiment) -> ScriptExperiment:
    """Check a script spec against the files it names and resolve them (after hashing, like the
    built-ins' data paths): the script file, ``code:`` items, ``data:`` folders, the environment."""
    spec_dir = path.resolve().parent
    for key in spec.smoke:
        if key not in spec.params:
            raise SpecError(path, f"smoke.{key}", f"a parameter declared under params: "
                            f"(declared: {', '.join(sorted(spec.params)) or 'none'})")
    r = spec.resources
    if r.gpus != 1:
        raise SpecError(path, "resources.gpus", "1 for task: script (the script starts its own workers; "
                        "gpuops starts it once)", r.gpus)
    if r.precision != "fp32" or r.channels_last:
        raise SpecError(path, "resources", "device and threads only for task: script (precision and "
                        "channels_last are the script's own choice)")
    for i, arg in enumerate(spec.entrypoint):
        for kind, key in placeholders(arg):
            if kind == "params" and key not in spec.params:
                raise SpecError(path, f"entrypoint[{i}]", f"placeholders of declared params (params: "
                                f"{', '.join(sorted(spec.params)) or 'none'})", "{params." + key + "}")
            if kind == "data" and key not in spec.data:
                raise SpecError(path, f"entrypoint[{i}]", f"placeholders of declared data folders (data: "
                                f"{', '.join(sorted(spec.data)) or 'none'})", "{data." + key + "}")
            if kind == "outputs" and spec.outputs is None:
                raise SpecError(path, f"entrypoint[{i}]", "an outputs: folder for {outputs} to name")
    argv = list(spec.entrypoint)
    idx = script_file_index(argv)
    if idx is not None and not placeholders(argv[idx]):
        found = resolve_data_path(argv[idx], spec_dir)
        if found is None or not found.is_file():
            raise SpecError(path, f"entrypoint[{idx}]", "an existing script file (looked beside the spec, in "
                            "the repository root and in the working directory)", argv[idx])
        argv[idx] = str(found)
    code = []
    for i, item in enumerate(spec.code):
        found = resolve_data_path(item, spec_dir)
        if found is None:
            raise SpecError(path, f"code[{i}]", "an existing source file or folder", item)
        code.append(str(found))
    data = {}
    for name, raw in spec.data.items():
        found = resolve_data_path(raw, spec_dir)
        if found is None:
            raise SpecError(path, f"data.{name}", "an existing folder (looked beside the spec, in the "
                            "repository root and in the working directory)", raw)
        data[name] = str(_check_folder(path, f"data.{name}", found, raw))
    env = spec.env
    if env is not None:
        found = find_environment_file(env, spec_dir)
        if found is None:
            raise SpecError(path, "env", "an environment: environments/<name>.yaml in the repository or the "
                            "working directory, or a path to one", env)
        from gpuops.envs import load_environment
        from gpuops.envs.lock import require_lock

        env_spec = load_environment(found)
        try:
            require_lock(env_spec)
        except SpecError as e:
            raise SpecError(path, "env", f"an environment whose lock is up to date ({e.expected})",
                            env) from None
        env = str(found)
    return spec.model_copy(update={"entrypoint": argv, "code": code, "data": data, "env": env})
