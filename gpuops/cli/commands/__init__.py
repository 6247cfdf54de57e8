"""One module per command group; each exposes ``register(app)``. Discovered by ``gpuops.cli.main``."""
