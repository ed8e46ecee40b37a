"""Read back what a generated image of the shapes dataset shows, to score prompt-attribute accuracy offline.

Background: median colour of the border. Foreground: pixels far from it. Colour: nearest palette entry to the
foreground median. Shape: from the foreground's fill of its bounding box, corner occupancy and vertical mass.
Position: centroid; size: bounding-box extent. Deterministic, numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgefusion.embedded.shapes import BACKGROUNDS, COLOURS, IMAGE_SIZE, POSITIONS, Attributes


def _nearest(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    d = [np.linalg.norm(rgb - np.array(palette[n], np.float32)) for n in names]
    return names[int(np.argmin(d))]


@dataclass
class Reading:
    """Attributes read off an image (``None`` where nothing could be read)."""

    shape: str | None
    colour: str | None
    size: str | None
    position: str | None
    background: str | None


def analyse(image: np.ndarray) -> Reading:
    """Read the attributes of an HxWx3 image (uint8, or float in [0, 1])."""
    img = np.asarray(image, np.float32)
    if img.max() <= 1.0 + 1e-6:
        img = img * 255.0
    h, w, _ = img.shape
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg = np.median(border, axis=0)
    dist = np.linalg.norm(img - bg, axis=-1)
    mask = dist > 60.0
    background = _nearest(bg, BACKGROUNDS)
    if mask.sum() < 0.01 * h * w:
        return Reading(None, None, None, None, background)
    colour = _nearest(np.median(img[mask], axis=0), COLOURS)
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    bw, bh = x1 - x0, y1 - y0
    box = mask[y0:y1, x0:x1].astype(np.float32)
    fill = box.mean()
    k = max(1, min(bw, bh) // 4)
    corners = np.mean([box[:k, :k].mean(), box[:k, -k:].mean(), box[-k:, :k].mean(), box[-k:, -k:].mean()])
    top, bottom = box[: max(1, bh // 3)].mean(), box[-max(1, bh // 3):].mean()
    if fill > 0.86 and corners > 0.7:
        shape = "square"
    elif bottom > 1.8 * max(top, 1e-3):
        shape = "triangle"
    elif corners < 0.2 and fill < 0.68:
        shape = "cross"
    else:
        shape = "circle"
    scale = IMAGE_SIZE / w
    cx, cy = xs.mean() * scale, ys.mean() * scale
    position = min(POSITIONS, key=lambda p: (POSITIONS[p][0] - cx) ** 2 + (POSITIONS[p][1] - cy) ** 2)
    size = "large" if max(bw, bh) * scale >= 14 else "small"
    return Reading(shape, colour, size, position, background)


def score(readings: list[Reading], asked: list[Attributes]) -> dict[str, float]:
    """Accuracy per attribute (fraction of images whose reading matches the prompt), plus ``all`` (every one)."""
    out = {}
    for attr in ("colour", "shape", "size", "position", "background"):
        out[attr] = float(np.mean([getattr(r, attr) == getattr(a, attr) for r, a in zip(readings, asked)]))
    out["all"] = float(np.mean([all(getattr(r, k) == getattr(a, k) for k in ("colour", "shape", "size", "position",
                                                                              "background"))
                                for r, a in zip(readings, asked)]))
    return out
