"""``task: script``: a user's own training code, run and tracked like a built-in experiment.

* ``gpuops.scripts.supervise``: argv placeholders, the script's environment variables, output
  lines to metrics, exit code to run status. Pure functions, for every target.
* ``gpuops.scripts.venv``: the ``env:`` venv on the local target, made from the environment's lock.
* ``gpuops.scripts.runner``: the local trainer (``python -m gpuops.train.worker`` dispatches here).
"""
