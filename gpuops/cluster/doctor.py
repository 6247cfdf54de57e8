"""``gpuops doctor --cluster``: doctor's capture on every alive Ray node, one report per node, and
what differs between them.

One Ray task per alive node, pinned to it with ``NodeAffinitySchedulingStrategy(soft=False)`` and
asking for no CPU, so that it runs even while trials hold every core. The task runs doctor's own
``collect()`` (no framework is imported: package versions come from metadata, as on a single host)
and sends the capture back as YAML text; the report is made here from it (``diagnose``), as
``gpuops doctor --replay`` would. ``capture_dir``: one capture file per node, named by host and
node id.

``differences`` compares the nodes' environment fingerprints (the same keys every tracked run
carries): which node has another driver, CUDA, GPU or framework build than the others.
"""

from __future__ import annotations

import contextlib
import re
import socket
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The fingerprint keys compared between nodes (gpuops.doctor.fingerprint.KEYS without the ones that
# differ on every healthy cluster: GPU count, kernel build, CPU model, image digest).
COMPARED = ("env.gpu", "env.gpu_cc", "env.driver", "env.cuda_driver", "env.torch", "env.torch_cuda",
            "env.cudnn", "env.python", "env.os")


@dataclass
class NodeReport:
    node_id: str
    node_ip: str
    hostname: str
    fingerprint: dict[str, str]
    verdict: str  # doctor's verdict: problems | could_not_verify | warnings | healthy | capture_failed
    verdict_line: str
    errors: list[str]  # finding codes of severity error
    warnings: list[str]
    report: dict[str, Any] | None  # the whole report (Report.to_dict()); None when the capture failed
    capture_file: str | None = None
    frameworks_imported: list[str] = field(default_factory=list)  # must stay empty
    error: str | None = None


@dataclass
class ClusterDoctorReport:
    nodes: list[NodeReport]
    differences: dict[str, dict[str, str]]  # fingerprint key -> node id -> value, where nodes disagree
    odd_ones: dict[str, list[str]]  # fingerprint key -> the node ids whose value is not the majority's

    @property
    def exit_code(self) -> int:
        return 1 if any(n.verdict in {"problems", "capture_failed"} for n in self.nodes) else 0


_FRAMEWORKS = ("torch", "tensorflow", "jax", "cupy", "mxnet", "chainer", "paddle")


def capture_on_node(quick: bool = False) -> dict[str, Any]:
    """The body of the per-node task: doctor's capture of this node, as YAML text."""
    from gpuops.doctor import collect
    from gpuops.doctor.capture import dump_capture

    node_id, node_ip = "unknown", "unknown"
    with contextlib.suppress(Exception):
        import ray

        if ray.is_initialized():
            node_id = ray.get_runtime_context().get_node_id()
            node_ip = ray.util.get_node_ip_address()
    try:
        text = dump_capture(collect(quick=quick))
        error = None
    except Exception as e:  # doctor's collect never raises for a missing tool; anything else is reported
        text, error = None, f"{type(e).__name__}: {e}"
    imported = sorted(m for m in _FRAMEWORKS if m in sys.modules)
    return {"node_id": node_id, "node_ip": node_ip, "hostname": socket.gethostname(), "capture": text,
            "error": error, "frameworks_imported": imported}


def differences(fingerprints: dict[str, dict[str, str]],
                keys: tuple[str, ...] = COMPARED) -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
    """For node id -> fingerprint: the keys whose values differ between nodes (node id -> value),
    and for each such key the nodes outside the most common value (on a tie: every node)."""
    diff: dict[str, dict[str, str]] = {}
    odd: dict[str, list[str]] = {}
    for key in keys:
        values = {node: fp.get(key, "unknown") for node, fp in fingerprints.items()}
        if len(set(values.values())) <= 1:
            continue
        diff[key] = values
        counts = Counter(values.values()).most_common()
        if len(counts) > 1 and counts[0][1] == counts[1][1]:
            odd[key] = sorted(values)
        else:
            odd[key] = sorted(n for n, v in values.items() if v != counts[0][0])
    return diff, odd


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:80] or "node"


def cluster_doctor(*, capture_dir: str | Path | None = None, quick: bool = False, timeout: float = 300.0,
                   env_dir: str | Path | None = None) -> ClusterDoctorReport:
    """Doctor on every alive node of the Ray cluster this process is connected to (``ray_session``)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from gpuops.doctor import diagnose
    from gpuops.doctor.capture import parse_capture, save_capture
    from gpuops.doctor.fingerprint import environment_fingerprint

    if not ray.is_initialized():
        raise RuntimeError("cluster_doctor needs a connected Ray (gpuops.cluster.ray_cluster.ray_session)")
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    remote = ray.remote(capture_on_node)
    refs = {remote.options(num_cpus=0, max_retries=0, name="gpuops-doctor",
                           scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False)
                           ).remote(quick): n for n in nodes}
    _ready, not_ready = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
    out: list[NodeReport] = []
    fingerprints: dict[str, dict[str, str]] = {}
    for ref, node in refs.items():
        nid = str(node["NodeID"])
        base = {"node_id": nid, "node_ip": str(node.get("NodeManagerAddress", "")),
                "hostname": str(node.get("NodeManagerHostname", ""))}
        if ref in not_ready:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
            out.append(NodeReport(**base, fingerprint={}, verdict="capture_failed",
                                  verdict_line=f"no capture within {timeout:.0f} s", errors=[], warnings=[],
                                  report=None, error="timed out"))
            continue
        try:
            got = ray.get(ref)
        except Exception as e:
            msg = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
            out.append(NodeReport(**base, fingerprint={}, verdict="capture_failed", verdict_line=msg,
                                  errors=[], warnings=[], report=None, error=msg))
            continue
        if got["capture"] is None:
            out.append(NodeReport(**base, fingerprint={}, verdict="capture_failed", verdict_line=got["error"],
                                  errors=[], warnings=[], report=None, error=got["error"],
                                  frameworks_imported=got["frameworks_imported"]))
            continue
        import yaml

        cap = parse_capture(yaml.safe_load(got["capture"]), where=f"node {nid}")
        fp = environment_fingerprint(cap)
        fingerprints[nid] = fp
        report = diagnose(cap, env_dir=env_dir)
        path = None
        if capture_dir is not None:
            name = f"{_safe_name(got['hostname'])}-{nid[:12]}.yaml"
            path = str(save_capture(cap, Path(capture_dir) / name))
        out.append(NodeReport(node_id=nid, node_ip=got["node_ip"], hostname=got["hostname"], fingerprint=fp,
                              verdict=report.verdict, verdict_line=report.verdict_line,
                              errors=sorted(report.codes("error")), warnings=sorted(report.codes("warning")),
                              report=report.to_dict(), capture_file=path,
                              frameworks_imported=got["frameworks_imported"]))
    diff, odd = differences(fingerprints)
    return ClusterDoctorReport(nodes=out, differences=diff, odd_ones=odd)
