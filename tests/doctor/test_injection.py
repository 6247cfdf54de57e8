"""Probed text cannot inject a command into ``gpuops doctor --fix --yes``.

A live collection (``LiveRunner``) runs fake tools first on PATH that print hostile values: an
nvidia-smi whose driver version carries a shell command, a dkms whose error names a path with ``..``
(the two reports that started this). The plan is then applied with ``yes=True`` in a temp root, with
every privileged tool a fake that records its argument vector. Nothing injected may run, no file may
appear, and no ``rm`` may be planned or run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gpuops.doctor import collect, diagnose
from gpuops.doctor.repair import apply_plan
from gpuops.doctor.runner import LiveRunner

UBUNTU = (
    'NAME="Ubuntu"\nVERSION="22.04.4 LTS (Jammy Jellyfish)"\nID=ubuntu\nID_LIKE=debian\n'
    'PRETTY_NAME="Ubuntu 22.04.4 LTS"\nVERSION_ID="22.04"\n'
)

TOOLS = [
    "apt-get",
    "apt-mark",
    "dkms",
    "dnf",
    "dracut",
    "grubby",
    "ldconfig",
    "mkinitcpio",
    "modinfo",
    "modprobe",
    "mokutil",
    "nvidia-ctk",
    "nvidia-modprobe",
    "pacman",
    "rm",
    "rmmod",
    "systemctl",
    "update-initramfs",
    "zypper",
    "yum",
    "ubuntu-drivers",
    "docker",
    "snap",
    "python3",
    "conda",
    "test",
    "nvidia-persistenced",
]


def _recorder(path: Path, log: Path, output: str = "", rc: int = 0) -> None:
    path.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"with open({str(log)!r}, 'a') as fh:\n"
        f"    fh.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + '\\n')\n"
        f"sys.stdout.write({output!r})\nsys.exit({rc})\n"
    )
    path.chmod(0o755)


def _setup(tmp_path: Path, smi: str, dkms: str, modinfo: str) -> tuple[Path, Path, Path]:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text(UBUNTU)
    (root / "var/lib/dkms/nvidia").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "argv.jsonl"
    for t in TOOLS:
        _recorder(bin_dir / t, log)
    _recorder(bin_dir / "nvidia-smi", log, smi)
    _recorder(bin_dir / "dkms", log, dkms)
    _recorder(bin_dir / "modinfo", log, modinfo)
    return root, bin_dir, log


def _run(tmp_path: Path, smi: str, dkms: str, modinfo: str = "550.54.15\n"):
    marker = tmp_path / "INJECTED"
    smi, dkms, modinfo = (x.replace("MARKER", str(marker)) for x in (smi, dkms, modinfo))
    root, bin_dir, log = _setup(tmp_path, smi, dkms, modinfo)
    # the inspected interpreter is a fake too: pip steps run through it, never through a real Python
    cap = collect(
        runner=LiveRunner(root=root, default_timeout=10),
        env={"PATH": str(bin_dir)},
        python=str(bin_dir / "python3"),
    )
    report = diagnose(cap, root=str(root))
    steps = report.plan()
    probe_calls = len(log.read_text().splitlines()) if log.exists() else 0
    res = apply_plan(
        steps,
        yes=True,
        is_root=True,
        include_optional=True,
        runner=LiveRunner(path=str(bin_dir)),
        log_path=tmp_path / "fix.log",
        root=str(root),
        reprobe=lambda: report.codes("error"),
    )
    calls = [json.loads(x) for x in log.read_text().splitlines()][probe_calls:] if log.exists() else []
    return marker, report, steps, res, calls


def _no_injection(marker: Path, steps, calls) -> None:
    assert not marker.exists()
    for s in steps:
        for a in [*s.argv, *(s.verify or [])]:
            assert "touch" not in a and "INJECTED" not in a and ";" not in a and "$" not in a, s.command
        if s.write is not None:
            assert "INJECTED" not in s.write.path and "INJECTED" not in s.write.content
    for c in calls:
        assert c[0] != "touch" and not any("INJECTED" in a or ";" in a for a in c), c


SMI = (
    "Tue Jan  3 16:55:13 2023\n"
    "+-----------------------------------------------------------------------------+\n"
    "| NVIDIA-SMI 550.54.15    Driver Version: 550.54.15;touch${IFS}MARKER;#    CUDA Version: 12.4 |\n"
    "|-------------------------------+----------------------+----------------------+\n"
)


def test_a_hostile_driver_version_runs_nothing(tmp_path):
    marker, report, steps, _res, calls = _run(
        tmp_path, SMI, "nvidia/550.54.15, 6.8.0-45-generic, x86_64: installed\n"
    )
    _no_injection(marker, steps, calls)
    assert report.findings  # doctor did say something about this machine
    # every command the executor ran was a recording fake (nothing real, nothing outside bin/)
    assert all(c[0] in {*TOOLS, "nvidia-smi"} for c in calls)


def test_a_dkms_dotdot_path_yields_no_rm(tmp_path):
    dkms = (
        "Error! Could not locate dkms.conf file.\n"
        "File: /var/lib/dkms/../../source/dkms.conf does not exist.\n"
    )
    smi = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
    marker, report, steps, _res, calls = _run(tmp_path, smi, dkms, modinfo="")
    _no_injection(marker, steps, calls)
    assert not [s for s in steps if s.argv[:1] == ["rm"]]
    assert not [c for c in calls if c[0] == "rm"]
    assert (tmp_path / "root/var/lib/dkms/nvidia").is_dir()  # nothing under dkms was deleted
    assert report.errors


def test_hostile_module_version_and_both_at_once(tmp_path):
    dkms = "File: /var/lib/dkms/nvidia/550.54.15;touch MARKER/source/dkms.conf does not exist.\n"
    marker, _report, steps, res, calls = _run(tmp_path, SMI, dkms, modinfo="550.54.15 $(touch MARKER)\n")
    _no_injection(marker, steps, calls)
    assert not [c for c in calls if c[0] == "rm"]
    assert "$(touch" not in json.dumps([s.to_dict() for s in steps])
    # the plans built nothing the executor had to refuse: the grammar stopped it first
    assert not [r for r in res.results if r.status == "refused"]
