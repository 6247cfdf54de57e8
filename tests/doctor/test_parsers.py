"""Parsers on real outputs (sources in fixtures/parsers.yaml)."""

from __future__ import annotations

import pytest

from gpuops.doctor import parsers as P
from gpuops.doctor.history import parse_apt_history, parse_dpkg_log

from .conftest import parser_cases

CASES = parser_cases()


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_parser(case):
    text, exp, kind = case["text"], case["expect"], case["parser"]
    assert case["source"]
    if kind == "nvidia-smi":
        r = P.parse_nvidia_smi(text, 0 if exp["status"] == "ok" else 9)
        assert r.status == exp["status"]
        for key in ("driver_version", "cuda_version", "nvml_library_version"):
            if key in exp:
                assert getattr(r, key) == exp[key]
        if "gpus" in exp:
            assert [g.name for g in r.gpus] == exp["gpus"]
            assert [g.memory_mib for g in r.gpus] == exp["memory"]
    elif kind == "proc-driver-version":
        assert P.parse_proc_driver_version(text) == exp["version"]
        assert P.parse_proc_driver_flavour(text) == exp["flavour"]
    elif kind == "dkms":
        st = P.parse_dkms_status(text)
        if "available" in exp:
            assert st.available is exp["available"]
        if "entries" in exp:
            assert [[e.module, e.version, e.kernel, e.state] for e in st.entries] == exp["entries"]
            assert len(st.errors) == exp["errors"]
    elif kind == "apt-history":
        got = [[c.date, c.action, c.package, c.old, c.new, c.command] for c in parse_apt_history(text)]
        assert got == exp["changes"]
    elif kind == "nvcc":
        assert P.parse_nvcc_version(text) == exp["version"]
    elif kind == "docker-info":
        d = P.parse_docker_info(text)
        assert d.reachable is exp["reachable"]
        if "nvidia" in exp:
            assert ("nvidia" in d.runtimes) is exp["nvidia"]
            assert d.runtimes and d.default_runtime == "runc"
        if "runtimes" in exp:
            assert d.runtimes == exp["runtimes"]
            assert d.default_runtime == exp["default"]
    elif kind == "kernel-log":
        k = P.parse_kernel_log(text)
        assert (list(k.api_mismatch) if k.api_mismatch else None) == exp["api_mismatch"]
        assert k.nouveau_bound is exp["nouveau"]
    else:  # pragma: no cover
        raise AssertionError(kind)


def test_docker_daemon_down_is_a_value():
    # the docker CLI's message when no daemon listens (docker/cli)
    text = (
        "Client:\n Version:    28.2.2\n\nServer:\nCannot connect to the Docker daemon at "
        "unix:///var/run/docker.sock. Is the docker daemon running?\n"
    )
    d = P.parse_docker_info(text)
    assert d.reachable is False and "Cannot connect" in (d.error or "")


def test_dkms_v3_format_and_dpkg_log():
    # dkms 3 prints module/version; the value is from this project's own test of the format
    st = P.parse_dkms_status(
        "nvidia/535.104.05, 6.5.0-14-generic, x86_64: installed\nnvidia/550.54.14: added\n"
    )
    assert [(e.version, e.kernel, e.state) for e in st.entries] == [
        ("535.104.05", "6.5.0-14-generic", "installed"),
        ("550.54.14", None, "added"),
    ]
    log = "2021-04-24 06:50:54 upgrade libnvidia-common-460:all 460.56-0ubuntu0.20.04.1 460.73.01-0ubuntu0.20.04.1\n"  # noqa: E501
    (c,) = parse_dpkg_log(log)
    assert (c.package, c.old, c.new, c.kind, c.command) == (
        "libnvidia-common-460",
        "460.56-0ubuntu0.20.04.1",
        "460.73.01-0ubuntu0.20.04.1",
        "driver",
        None,
    )


def test_torch_version_py_of_this_venv():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("torch")
    assert spec is not None and spec.origin
    text = (Path(spec.origin).parent / "version.py").read_text()
    v = P.parse_torch_version_py(text)
    assert v["__version__"].endswith("+cpu") and v["cuda"] is None


def test_nouveau_blacklist_rules():
    assert P.modprobe_blacklists_nouveau("blacklist nouveau\noptions nouveau modeset=0\n")
    assert not P.modprobe_blacklists_nouveau("# blacklist nouveau\n")
    assert not P.cmdline_blacklists_nouveau("ro rootflags=subvol=root rd.driver.blacklist=nouveau")
    assert P.cmdline_blacklists_nouveau("ro modprobe.blacklist=nouveau quiet")
