"""Fixtures for the doctor tests: captures from real reports and the parser texts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


def parser_cases() -> list[dict]:
    return yaml.safe_load((FIXTURES / "parsers.yaml").read_text(encoding="utf-8"))
