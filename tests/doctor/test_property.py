"""Garbled captures never crash doctor: they diagnose, or fail with one clear UsageError."""

from __future__ import annotations

import contextlib
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuops.doctor import diagnose
from gpuops.doctor.capture import parse_capture
from gpuops.errors import UsageError

FIXTURES = Path(__file__).parent / "fixtures"
BASES = [yaml.safe_load(p.read_text()) for p in sorted(FIXTURES.glob("*.capture.yaml"))]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False), st.text(max_size=200)
)
values = st.recursive(
    scalars,
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=12), c, max_size=4)),
    max_leaves=12,
)
# text that looks like the tools' output, shuffled
words = st.sampled_from(
    [
        "NVIDIA-SMI",
        "Driver Version:",
        "CUDA Version:",
        "535.104.05",
        "|",
        "0",
        "On",
        "Off",
        "NVRM:",
        "API mismatch:",
        "the client has the version",
        "nouveau",
        "Error!",
        "nvidia,",
        "installed",
        "SecureBoot enabled",
        "release",
        "12.1,",
        "libcudnn.so.8",
        "sm_86",
        "\n",
        "cannot open shared object file",
        "couldn't communicate with the NVIDIA driver",
    ]
)
tooltext = st.lists(words, max_size=40).map(" ".join)


def _paths(d, prefix=()):
    if isinstance(d, dict):
        for k, v in d.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


def _set(d, path, value):
    for p in path[:-1]:
        d = d[p]
    d[path[-1]] = value


def _check(data):
    try:
        cap = parse_capture(data, "garbled.yaml")
    except UsageError as e:
        assert "\n" not in e.message
        return
    report = diagnose(cap)
    assert report.exit_code in (0, 1)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(range(len(BASES))), data=st.data())
def test_mutated_captures_never_crash(base, data):
    import copy

    doc = copy.deepcopy(BASES[base])
    paths = list(_paths(doc))
    for _ in range(data.draw(st.integers(1, 4))):
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        with contextlib.suppress(KeyError, IndexError, TypeError):
            _set(doc, path, data.draw(st.one_of(values, tooltext)))
    _check(doc)


@settings(max_examples=60, deadline=None)
@given(stdout=tooltext, stderr=tooltext, rc=st.one_of(st.none(), st.integers(-5, 300)), log=tooltext)
def test_tool_outputs_of_any_shape(stdout, stderr, rc, log):
    doc = {
        "format": "gpuops-capture",
        "format_version": 1,
        "kind": "report",
        "commands": {
            k: {"argv": [k], "rc": rc, "stdout": stdout, "stderr": stderr}
            for k in (
                "nvidia-smi",
                "dkms-status",
                "kernel-log",
                "docker-info",
                "nvcc",
                "modinfo-nvidia",
                "mokutil-sb-state",
                "ldconfig-p",
                "dpkg-query",
            )
        },
        "files": {
            "/proc/driver/nvidia/version": {"content": stdout},
            "/var/log/apt/history.log": {"content": stderr},
        },
        "logs": [{"origin": "x", "text": log}],
    }
    _check(doc)


@settings(max_examples=60, deadline=None)
@given(doc=values)
def test_any_yaml_document(doc):
    _check(doc)
