"""``gpuops doctor --cluster``'s library half on the session's real two-node cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpuops.cluster.doctor import cluster_doctor, differences
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "doctor" / "fixtures"


def test_one_report_per_node(ray_conn: Any, ray_cluster: dict[str, Any], tmp_path: Path) -> None:
    from gpuops.doctor import load_capture
    from gpuops.doctor.fingerprint import environment_fingerprint

    report = cluster_doctor(capture_dir=tmp_path / "captures")
    assert sorted(n.node_id for n in report.nodes) == sorted(ray_cluster["nodes"])
    local = environment_fingerprint()
    for node in report.nodes:
        assert node.error is None, node.error
        assert node.frameworks_imported == []  # doctor's capture imports no framework
        assert node.verdict in {"problems", "could_not_verify", "warnings", "healthy"}
        assert node.report is not None and node.report["summary"]["os"]
        assert node.node_ip == "127.0.0.1"
        # Both nodes are this machine: their fingerprints are this host's.
        for key in ("env.python", "env.os", "env.torch", "env.driver"):
            assert node.fingerprint[key] == local[key], key
        saved = load_capture(node.capture_file)  # one capture file per node, readable by --replay
        assert saved.kind == "live" and node.node_id[:12] in Path(node.capture_file).name
    assert len({n.capture_file for n in report.nodes}) == 2
    assert report.differences == {} and report.odd_ones == {}


def test_differences_between_real_hosts() -> None:
    """Three real hosts from bug reports as if they were nodes of one cluster."""
    from gpuops.doctor import load_capture
    from gpuops.doctor.fingerprint import environment_fingerprint

    fps = {name: environment_fingerprint(load_capture(FIXTURES / f"{name}.capture.yaml"))
           for name in ("devbox", "real_06", "real_07")}
    diff, odd = differences(fps)
    assert diff["env.driver"] == {n: fps[n]["env.driver"] for n in fps}
    assert fps["real_06"]["env.driver"] == "470.182.03" and fps["real_07"]["env.driver"] == "367.27"
    assert odd["env.driver"] == ["devbox", "real_06", "real_07"]  # three values: no majority
    assert "env.torch_cuda" in diff
    # Two nodes agreeing, one off: only that one is named.
    same = {"a": fps["real_06"], "b": fps["real_06"], "c": fps["real_07"]}
    diff2, odd2 = differences(same)
    assert odd2["env.driver"] == ["c"] and set(diff2) <= set(diff)
    assert differences({"a": fps["devbox"], "b": dict(fps["devbox"])}) == ({}, {})
