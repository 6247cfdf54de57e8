"""Built images and their self-check results.

Self-check results are kept outside the image (labels are fixed at build time) as one JSON file per
tag under ``$GPUOPS_CACHE_DIR/images/`` (default ``~/.cache/gpuops/images/``). ``list_images``
joins the engine's ``gpuops/*`` images (by their ``org.gpuops.*`` labels) with those files.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

LABEL = "org.gpuops"


def cache_dir() -> Path:
    """Where self-check results go: ``$GPUOPS_CACHE_DIR``, else gpuops' folder in the user's cache."""
    from gpuops.cache import cache_dir as user_cache_dir

    return Path(os.environ.get("GPUOPS_CACHE_DIR") or user_cache_dir())


def _sidecar(tag: str) -> Path:
    return cache_dir() / "images" / (tag.replace("/", "__").replace(":", "@") + ".json")


def save_selfcheck(tag: str, image_id: str, result: dict[str, Any]) -> Path:
    p = _sidecar(tag)
    p.parent.mkdir(parents=True, exist_ok=True)
    doc = {"tag": tag, "image_id": image_id, "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "selfcheck": result}
    p.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return p


def load_selfcheck(tag: str) -> dict[str, Any] | None:
    p = _sidecar(tag)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8")).get("selfcheck")
    except (OSError, ValueError):
        return None


def list_images(client: Any) -> list[dict[str, Any]]:
    """Every image with gpuops labels: tag, env, framework, CUDA/cuDNN, size, created, self-check."""
    rows = []
    for img in client.images.list(filters={"label": f"{LABEL}.env"}):
        labels = img.labels or {}
        tags = [t for t in img.tags if t.startswith("gpuops/")] or img.tags or ["<none>"]
        for tag in tags:
            sc = load_selfcheck(tag)
            rows.append({
                "tag": tag,
                "image_id": img.id,
                "env": labels.get(f"{LABEL}.env"),
                "framework": labels.get(f"{LABEL}.framework"),
                "framework_version": labels.get(f"{LABEL}.framework_version"),
                "cuda": labels.get(f"{LABEL}.cuda"),
                "cudnn": labels.get(f"{LABEL}.cudnn"),
                "python": labels.get(f"{LABEL}.python"),
                "spec_hash": labels.get(f"{LABEL}.spec_hash"),
                "gpuops_version": labels.get(f"{LABEL}.version"),
                "kb_version": labels.get(f"{LABEL}.kb_version"),
                "created": img.attrs.get("Created"),
                "size_mb": round((img.attrs.get("Size") or 0) / 1e6, 1),
                "selfcheck": sc,
            })
    return sorted(rows, key=lambda r: (r["env"] or "", r["created"] or ""))
