"""Figures a reader understands without the code: labelled side-by-side panels and the SR learning
curve.

A panel shows one crop of an evaluation image three times, bicubic | model | ground truth, each
tile captioned with what it is and its PSNR/SSIM (whole image, Y channel, ``scale``-pixel border),
and a title line naming the image, the scale and the crop (rows and columns on the HR image). The
same words are stored in the PNG's text chunks (``Title``, ``Description`` and one key per tile),
so that a test or a script can read them back without OCR.

The learning curve names the data set, the scale, the unit (dB) and carries the bicubic baseline as
a labelled line; its words are stored in the PNG's text chunks too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpuops.sr.color import as_rgb, luma

CROP = 96  # HR pixels of the square crop a panel shows
ZOOM = 2  # each crop pixel drawn as ZOOM x ZOOM pixels
TILE_GAP = 6
CAPTION_H = 38
TITLE_H = 24
TILE_KEYS = ("bicubic", "model", "ground truth")


@dataclass(frozen=True)
class Crop:
    """A window on the HR image: rows ``top:top+size``, columns ``left:left+size``."""

    top: int
    left: int
    size: int

    def describe(self, hr_shape: tuple[int, ...]) -> str:
        h, w = hr_shape[:2]
        return (f"crop rows {self.top}-{self.top + self.size}, columns {self.left}-{self.left + self.size} "
                f"of {h}x{w}")


def choose_crop(up: np.ndarray, hr: np.ndarray, size: int = CROP, border: int = 0) -> Crop:
    """The ``size`` square (inside ``border``) where bicubic is worst: the window with the largest
    squared Y error between the bicubic image and the ground truth, found on a coarse grid. That is
    where a model has the most to show."""
    err = (luma(up) - luma(hr)) ** 2
    h, w = err.shape
    s = max(1, min(size, h - 2 * border, w - 2 * border))
    integ = np.pad(err.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    step = max(1, s // 4)
    best, where = -1.0, (border, border)
    for top in range(border, h - border - s + 1, step):
        for left in range(border, w - border - s + 1, step):
            tot = (integ[top + s, left + s] - integ[top, left + s] - integ[top + s, left] + integ[top, left])
            if tot > best:
                best, where = float(tot), (top, left)
    return Crop(where[0], where[1], s)


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the bitmap font
        return ImageFont.load_default()


def _score(s: dict[str, float] | None) -> str:
    if not s:
        return "reference"
    return f"PSNR {s['psnr']:.2f} dB, SSIM {s['ssim']:.4f}"


@dataclass
class Panel:
    """A labelled panel: the PIL image and the words drawn on it (also its PNG text chunks)."""

    image: Any
    text: dict[str, str]

    def save(self, path: str | Path) -> Path:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for k, v in self.text.items():
            info.add_text(k, v)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.image.save(path, format="PNG", pnginfo=info)
        return path


def labelled_panel(name: str, up: np.ndarray, sr: np.ndarray, hr: np.ndarray, *, scale: int,
                   scores: dict[str, float], model_name: str = "model", crop: Crop | None = None,
                   zoom: int = ZOOM) -> Panel:
    """The panel of one image. ``up``, ``sr``, ``hr``: uint8 RGB (or greyscale) HR-size images;
    ``scores``: ``psnr``, ``ssim``, ``psnr_bicubic``, ``ssim_bicubic`` of the whole image."""
    from PIL import Image, ImageDraw

    c = crop or choose_crop(up, hr, border=scale)
    tiles = [as_rgb(np.asarray(im))[c.top : c.top + c.size, c.left : c.left + c.size] for im in (up, sr, hr)]
    tiles = [t.repeat(zoom, axis=0).repeat(zoom, axis=1) for t in tiles]
    tile = tiles[0].shape[0]
    where = c.describe(hr.shape)
    title = f"{name}  x{scale} | {where}, shown {zoom}x | scores: whole image, Y"
    title_font = _font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max(3 * tile + 2 * TILE_GAP, int(probe.textlength(title, font=title_font)) + 8)
    canvas = Image.new("RGB", (width, TITLE_H + tile + CAPTION_H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 5), title, fill=(0, 0, 0), font=title_font)
    captions = {
        "bicubic": (f"bicubic | {_score({'psnr': scores['psnr_bicubic'], 'ssim': scores['ssim_bicubic']})}"),
        "model": f"{model_name} | {_score(scores)}",
        "ground truth": "ground truth (HR)",
    }
    for k, (key, t) in enumerate(zip(TILE_KEYS, tiles, strict=True)):
        x = k * (tile + TILE_GAP)
        canvas.paste(Image.fromarray(np.ascontiguousarray(t)), (x, TITLE_H))
        head, _, tail = captions[key].partition(" | ")
        draw.text((x + 2, TITLE_H + tile + 3), head, fill=(0, 0, 0), font=_font(12))
        if tail:
            draw.text((x + 2, TITLE_H + tile + 19), tail, fill=(40, 40, 40), font=_font(11))
    text = {
        "Title": title,
        "Description": ("left to right: bicubic | model | ground truth; PSNR/SSIM on the whole image's Y "
                        f"channel with {scale} border pixels cropped"),
        "crop": where,
        **{f"tile {k + 1}": captions[key] for k, key in enumerate(TILE_KEYS)},
    }
    return Panel(canvas, text)


# --------------------------------------------------------------------------- learning curve
def learning_curve_figure(psnr: list[tuple[float, float]], *, bicubic: float | None, dataset: str,
                          scale: int, loss: list[tuple[float, float]] | None = None,
                          label: str = "model", x_label: str = "iteration",
                          extra: dict[str, list[tuple[float, float]]] | None = None,
                          refs: dict[str, float] | None = None) -> Any:
    """A matplotlib ``Figure``: PSNR (dB) on ``dataset`` at ``x scale`` against ``x_label``, the
    bicubic baseline as a labelled dashed line, and the training loss beside it when given.
    ``extra`` adds more PSNR curves (label -> points) to the same axes; ``refs`` adds labelled
    dotted reference lines (e.g. published figures, label -> dB)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    two = bool(loss)
    fig = Figure(figsize=(11 if two else 6.5, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2) if two else [fig.subplots(1, 1)]
    ax = axes[-1] if two else axes[0]
    curves = {label: psnr, **(extra or {})}
    for k, (name, pts) in enumerate(curves.items()):
        if pts:
            xs, ys = zip(*sorted(pts), strict=True)
            ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, ms=3, color=f"C{k}", label=name)
    if bicubic is not None:
        ax.axhline(bicubic, color="0.35", ls="--", lw=1.2, label=f"bicubic {bicubic:.2f} dB")
    for k, (name, value) in enumerate((refs or {}).items()):
        ax.axhline(value, color=f"C{k + 5}", ls=":", lw=1.2, label=f"{name} {value:.2f} dB")
    if bicubic is not None:  # keep the interesting range: from a little under bicubic upwards
        top = max([bicubic, *(v for pts in curves.values() for _, v in pts), *(refs or {}).values()])
        ax.set_ylim(bicubic - 1.5, top + 0.3)
    title = f"{dataset} x{scale}: PSNR on Y (dB)"
    ax.set_title(title)
    ax.set_xlabel(x_label)
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if two and loss:
        lx, ly = zip(*sorted(loss), strict=True)
        axes[0].plot(lx, ly, color="C0", lw=1)
        axes[0].set_yscale("log")
        axes[0].set_title("training loss (MSE on Y in [0, 1])")
        axes[0].set_xlabel(x_label)
        axes[0].set_ylabel("MSE")
        axes[0].grid(alpha=0.3)
    # The figure's label carries the words that save_figure writes into the PNG.
    fig.set_label(f"data set {dataset}, scale x{scale}, unit dB, x axis {x_label}; "
                  + (f"bicubic baseline {bicubic:.2f} dB; " if bicubic is not None else "")
                  + "".join(f"{k} {v:.2f} dB; " for k, v in (refs or {}).items())
                  + "curves: " + ", ".join(curves))
    return fig


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save a figure from this module as PNG with its words in the PNG text chunks."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    fig.savefig(path, format="png", metadata={"Title": " / ".join(titles), "Description": fig.get_label()})
    return path
