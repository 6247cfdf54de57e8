"""Upscaling an image with the model a super-resolution run logged (``gpuops predict``)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from gpuops.errors import UsageError


def load_run_model(run_id: str, tracking_uri: str | None = None,
                   device: str = "auto") -> tuple[Any, dict[str, Any]]:
    """The run's network (weights loaded, eval mode, on ``device``) and its ``model/config.json``."""
    import torch

    from gpuops.tracking.runs import resolve_run_id
    from gpuops.tracking.tracker import Tracker
    from gpuops.train.common import pick_device

    tr = Tracker(tracking_uri)
    run_id = resolve_run_id(tr.client, run_id)  # a whole id or a unique prefix
    tr.run_id = run_id
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = tr.download("model", tmp)
        except Exception as e:
            raise UsageError(f"run {run_id} has no logged model (did it finish?)") from e
        cfg = json.loads((folder / "config.json").read_text())
        dev = pick_device(device)
        state = torch.load(folder / "state_dict.pt", map_location=dev, weights_only=True)
    if cfg.get("task") != "sr":
        raise UsageError(f"run {run_id} is a {cfg.get('task')} run; predict upscales with SR models")
    from gpuops.train.sr import build_from_config

    model = build_from_config(cfg).to(dev)
    model.load_state_dict(state)
    model.eval()
    return model, cfg


def predict_image(run_id: str, image: Path, out: Path, *, device: str = "auto",
                  tracking_uri: str | None = None) -> dict[str, Any]:
    import numpy as np
    from PIL import Image

    from gpuops.sr.evaluate import upscale
    from gpuops.train.common import pick_device

    if not Path(image).is_file():
        raise UsageError(f"{image}: no such image")
    # checked before the model is fetched: a wrong input or output is one line, not a traceback
    # after the inference
    from PIL import UnidentifiedImageError

    out = Path(out)
    Image.init()
    ext = out.suffix.lower()
    if ext not in Image.registered_extensions() or Image.registered_extensions()[ext] not in Image.SAVE:
        raise UsageError(f"--out {out}: not an image file name PIL can write (e.g. .png, .jpg, .bmp, .tif)")
    try:
        with Image.open(image) as im:
            im.verify()  # a header PIL does not know, or a truncated file
        with Image.open(image) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise UsageError(f"{image}: not an image PIL can read ({type(e).__name__}: {e})") from None
    model, cfg = load_run_model(run_id, tracking_uri, device)
    sr = upscale(model, rgb, int(cfg["scale"]), cfg["colour"], pick_device(device))
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sr).save(out)
    return {"run_id": run_id, "input": str(image), "out": str(out), "scale": cfg["scale"],
            "colour": cfg["colour"], "width": int(sr.shape[1]), "height": int(sr.shape[0])}
