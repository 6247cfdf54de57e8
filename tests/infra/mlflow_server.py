"""MLflow server fixture (owned by the compare/UI work): a real `mlflow server` on 127.0.0.1.

``mlflow_server`` (session scope) starts ``gpuops.tracking.server.start_server`` over a sqlite
store in a temporary folder, with artifacts served through the server, and yields the handle
(``.url``, ``.backend_uri``, ``.artifacts_dir``, ``.stop()``). Log to it with
``MlflowClient(tracking_uri=mlflow_server.url)``; the store is shared by every test of the session,
so create experiments with names of your own.

``sr_store`` (session scope): a sqlite store holding SRCNN-like runs as ``gpuops run`` logs them
(``tests/compare/store.py`` says what is in it), shared by the compare and UI tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from gpuops.tracking.server import MlflowServer
    from tests.compare.store import Store


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    from gpuops.tracking.server import start_server

    root = tmp_path_factory.mktemp("mlflow-server")
    # The first start of a fresh store runs MLflow's database migrations: allow for a busy machine.
    server = start_server(f"sqlite:///{root / 'mlflow.db'}", artifacts_dir=root / "artifacts", timeout=180)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sr_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    from tests.compare.store import make_store

    return make_store(tmp_path_factory.mktemp("sr-store"))
