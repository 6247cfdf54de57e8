"""The run tests' fixtures (a real sqlite MLflow store per test, the T91/Set5 copies)."""

from tests.run.conftest import data_dir, store, store_template  # noqa: F401 - pytest fixtures
