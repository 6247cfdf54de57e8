"""MLflow's system metrics (CPU, memory and, through NVML, the GPUs) sampled for a run while it trains."""

from __future__ import annotations

from typing import Any


def start_system_metrics(run_id: str, tracking_uri: str, want: bool) -> Any:
    """MLflow's ``SystemMetricsMonitor`` for ``run_id``, started (every 5 s); None when not wanted or
    when it cannot start: system metrics are a nice-to-have and never fail a run. Call ``finish()``
    on it at the end."""
    if not want:
        return None
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        mon = SystemMetricsMonitor(run_id, sampling_interval=5, samples_before_logging=1,
                                   tracking_uri=tracking_uri)
        mon.start()
        return mon
    except Exception:
        return None
