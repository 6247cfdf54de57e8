"""Progress events from a trainer to ``gpuops run``: one JSON object per line, appended to a file
(``LocalRun.events`` reads it back as ``RunEvent``s). Torch-free, so that the script runner uses it too."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


class Events:
    """``emit("progress", it=..., loss=...)`` appends ``{"event": "progress", "time": ..., ...}``;
    with no path, events go nowhere (ranks other than 0)."""

    def __init__(self, path: str | Path | None) -> None:
        self._f = open(path, "a", buffering=1, encoding="utf-8") if path else None  # noqa: SIM115

    def emit(self, event: str, **data: Any) -> None:
        if self._f is not None:
            self._f.write(json.dumps({"event": event, "time": time.time(), **data}) + "\n")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
