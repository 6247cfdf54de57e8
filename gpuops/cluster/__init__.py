"""Running gpuops on a Ray cluster: trials fanned out over a cluster's GPUs, doctor on every node.

Public API (the CLI renders; nothing here prints)::

    gpuops.cluster.ray_cluster.ray_session(address=None, ...) -> RaySession   # context manager
    gpuops.cluster.trials.run_trials(trials, tracking_uri=..., ...) -> list[TrialResult]
    gpuops.cluster.doctor.cluster_doctor(capture_dir=None, ...) -> ClusterDoctorReport

Ray is an optional extra (``pip install 'gpuops[ray]'``) and is imported only inside these functions.
"""
