"""``plans`` for the checks, imported on first use: a healthy machine produces no finding and so
needs no repair plan, and importing every plan module is a fifth of doctor's start-up."""

from __future__ import annotations

from typing import Any


class _Plans:
    def __getattr__(self, name: str) -> Any:
        from gpuops.doctor import plans as real

        return getattr(real, name)


plans: Any = _Plans()
