"""Hourly prices from ``ec2_prices.yaml`` (a data file that states its source and date)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from pydantic import BaseModel, ConfigDict


class PriceTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    as_of: str
    currency: str
    regions: dict[str, dict[str, float]]

    def hourly(self, instance_type: str, region: str) -> float | None:
        """On-demand USD per hour, or None when the table has no figure for it."""
        return self.regions.get(region, {}).get(instance_type)

    def known_types(self, region: str) -> list[str]:
        return sorted(self.regions.get(region, {}))


@lru_cache(maxsize=1)
def price_table() -> PriceTable:
    import yaml

    text = resources.files("gpuops.cloud").joinpath("ec2_prices.yaml").read_text(encoding="utf-8")
    return PriceTable.model_validate(yaml.safe_load(text))
