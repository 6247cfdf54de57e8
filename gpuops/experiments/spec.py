"""The experiment spec: what ``experiments/*.yaml`` may say, validated by pydantic.

Two tasks share the same outer shape (``name``, ``task``, ``seed``, ``data``, ``model``, ``train``,
``eval``, ``tracking``, ``resources``); ``task`` picks the schema of ``data``, ``model`` and ``eval``.

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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gpuops.errors import SpecError, UsageError
from gpuops.specs import read_yaml, validate


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- shared sections
class TrainSpec(_Strict):
    """How long and how to optimise. Exactly one of ``iterations`` and ``epochs``."""

    iterations: int | None = Field(None, ge=1)
    epochs: int | None = Field(None, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "cosine", "step", "onecycle"] = "constant"
    warmup: int = Field(0, ge=0)  # iterations of linear warm-up
    step_every: int | None = Field(None, ge=1)  # schedule=step: multiply lr by gamma every N iterations
    gamma: float = Field(0.1, gt=0, le=1)
    grad_clip: float | None = Field(None, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # classify only
    subset: int | None = Field(None, ge=1)  # classify: train on the first N examples of a seeded shuffle
    log_every: int = Field(50, ge=1)
    checkpoint_every: int = Field(0, ge=0)  # iterations; 0 = no intermediate checkpoints

    @model_validator(mode="after")
    def _one_length(self) -> TrainSpec:
        if (self.iterations is None) == (self.epochs is None):
            raise ValueError("exactly one of train.iterations and train.epochs")
        return self


class TrackingSpec(_Strict):
    experiment: str | None = None  # MLflow experiment; default: the spec's name
    run_name: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    system_metrics: bool | None = None  # None: on when an NVIDIA GPU is present


class ResourcesSpec(_Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16/fp16: autocast on CUDA only
    gpus: int = Field(1, ge=1)  # > 1: torchrun with DDP (nccl on GPU, gloo on CPU)
    threads: int | None = Field(None, ge=1)  # torch CPU threads
    channels_last: bool = False  # CUDA only


# --------------------------------------------------------------------------- super-resolution
class SRData(_Strict):
    train: str = "data/T91"
    eval: str = "data/Set5"
    scale: int = Field(3, ge=2, le=8)
    colour: Literal["y", "rgb"] = "y"
    patch: int = Field(33, ge=8)  # HR patch size
    stride: int = Field(14, ge=1)  # sampling=grid
    sampling: Literal["grid", "random"] = "grid"
    patches: int = Field(20000, ge=1)  # sampling=random: size of the patch pool drawn once
    augment: bool = False  # sampling=random: flips and 90° rotations
    train_images: int | None = Field(None, ge=1)  # use the first N training images


class SRModel(_Strict):
    arch: Literal["srcnn", "fsrcnn", "espcn", "vdsr"] = "srcnn"
    layers: str | None = None  # "64x9x9_32x5x5_1x5x5"; None = the arch's preset
    activation: Literal["relu", "leaky_relu"] = "relu"
    padding: Literal["valid", "same"] = "valid"
    batch_norm: bool = False

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
    crop: int | None = Field(None, ge=16)


# --------------------------------------------------------------------------- classification
class ClassifyData(_Strict):
    dataset: Literal["cifar10", "digits"] = "cifar10"
    root: str = "data/cifar10"  # cifar-10-python.tar.gz or cifar-10-batches-py/ in here
    augment: bool = True  # random crop (padding) + horizontal flip
    test_subset: int | None = Field(None, ge=1)  # evaluate on the first N test examples


class ClassifyModel(_Strict):
    arch: Literal["cnn10", "resnet20", "resnet18", "fast"] = "resnet20"


class ClassifyEval(_Strict):
    every: int | None = Field(None, ge=1)  # iterations; None = only at the end
    tta_flip: bool = False  # average logits over the image and its mirror
    batch_size: int = Field(1000, ge=1)


class SweepSpec(_Strict):
    """Defaults for ``gpuops sweep`` (``--param`` on the command line replaces them)."""

    param: str  # a dotted spec key, e.g. train.subset
    values: list[int | float | str] = Field(min_length=1)
    metric: str | None = None  # what the plot shows; default val/accuracy or val/psnr


# --------------------------------------------------------------------------- experiments
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _Experiment(_Strict):
    name: str
    description: str = ""
    seed: int = 0
    train: TrainSpec
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    sweep: SweepSpec | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("a name of letters, digits, '_', '.', '-'")
        return v


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


ExperimentSpec = SRExperiment | ClassifyExperiment
_TASKS: dict[str, type[SRExperiment] | type[ClassifyExperiment]] = {
    "sr": SRExperiment,
    "classify": ClassifyExperiment,
}


@dataclass
class ResolvedExperiment:
    """A validated spec with its data paths resolved, plus where it came from."""

    spec: SRExperiment | ClassifyExperiment
    source: str  # the spec file
    spec_hash: str
    overrides: list[str] = field(default_factory=list)
    smoke: bool = False

    @property
    def experiment_name(self) -> str:
        return self.spec.tracking.experiment or self.spec.name

    def to_dict(self) -> dict[str, Any]:
        """The document stored as the run's ``spec.yaml`` (enough to resume the run)."""
        return {
            "spec": self.spec.model_dump(mode="json"),
            "source": self.source,
            "spec_hash": self.spec_hash,
            "overrides": list(self.overrides),
            "smoke": self.smoke,
        }

    def params(self) -> dict[str, str]:
        """The whole resolved spec, flattened: ``model.layers``, ``train.lr``, ..."""
        return flatten(self.spec.model_dump(mode="json"))


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
    if task == "sr" and (out.get("model") or {}).get("arch") == "vdsr":
        task = "sr-deep"
    for section, values in smoke_overrides(task).items():
        sec = out.setdefault(section, {})
        sec.update(values)
    return out


# --------------------------------------------------------------------------- loading
def _validate_task(path: str | Path, data: Any) -> SRExperiment | ClassifyExperiment:
    if not isinstance(data, dict):
        raise SpecError(path, "", "a mapping of experiment fields", type(data).__name__)
    task = data.get("task")
    if task not in _TASKS:
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


def spec_hash(spec: SRExperiment | ClassifyExperiment) -> str:
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
    if smoke:  # the reductions, then the user's --set again (they win: --smoke --set train.iterations=50)
        smoked = apply_overrides(_apply_smoke(spec.model_dump(mode="json")), overrides)
        spec = _validate_task(path, smoked)
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
    return ResolvedExperiment(spec=spec, source=str(path.resolve()), spec_hash=h, overrides=overrides,
                              smoke=smoke)


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
