"""MLflow tracking for gpuops runs: ``Tracker`` (start / log / finish) and run set-up.

Nothing here imports mlflow at module level; ``Tracker()`` does, when it is built.
"""
