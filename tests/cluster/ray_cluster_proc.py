"""A real two-node Ray cluster on 127.0.0.1 for the tests, run as its own process.

    python tests/cluster/ray_cluster_proc.py TEMP_DIR

starts a head node (2 CPUs, 2 declared GPUs, the dashboard on 127.0.0.1) and a second node (1 CPU,
no GPU) with ``ray.cluster_utils.Cluster``, prints ``ADDRESS <gcs address>`` and
``DASHBOARD <url>`` on stdout, and shuts both nodes down (only its own processes) when its
stdin closes or it gets SIGTERM.

Ray turns a node address of 127.0.0.1 into the host's reachable address on Linux; with
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` in the environment (set by the fixture) it keeps the
loopback address, so every port of both nodes is bound to 127.0.0.1 only.
"""

from __future__ import annotations

import signal
import sys
import threading


def main() -> int:
    temp_dir = sys.argv[1]
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "num_gpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": None, "temp_dir": temp_dir, "resources": {"head": 1}})
    worker = cluster.add_node(num_cpus=1, num_gpus=0, resources={"second": 1})
    cluster.wait_for_nodes()
    head = cluster.head_node
    print(f"ADDRESS {cluster.address}", flush=True)
    print(f"DASHBOARD http://{head.address_info.get('webui_url') or ''}", flush=True)
    print(f"NODES {head.node_id} {worker.node_id}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
