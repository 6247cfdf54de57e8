"""Session fixtures that start real components (Docker Engine, MLflow server, moto) for the tests."""
