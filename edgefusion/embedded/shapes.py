"""A deterministic procedural text-to-image dataset: coloured shapes on coloured backgrounds, with captions.

"a small red triangle in the top left on a blue background". Everything is generated from a seed; nothing is
downloaded. A fixed tenth of the attribute combinations never appears in training (``held_out``), so the quality
gate measures prompts the model has not seen.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

IMAGE_SIZE = 32
SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (215, 40, 40), "green": (40, 170, 60), "blue": (45, 85, 225), "yellow": (235, 215, 45),
           "purple": (145, 60, 195), "orange": (245, 135, 30)}
BACKGROUNDS = {"black": (15, 15, 15), "white": (240, 240, 240), "gray": (128, 128, 128), "blue": (45, 85, 225),
               "green": (40, 170, 60)}
SIZES = {"small": 10, "large": 18}  # nominal extent in pixels
POSITIONS = {"top left": (9, 9), "top right": (23, 9), "bottom left": (9, 23), "bottom right": (23, 23),
             "center": (16, 16)}  # (x, y) centres


@dataclass(frozen=True)
class Attributes:
    """What one image shows."""

    shape: str
    colour: str
    size: str
    position: str
    background: str

    def caption(self) -> str:
        """The prompt for these attributes."""
        return f"a {self.size} {self.colour} {self.shape} in the {self.position} on a {self.background} background"

    def to_dict(self) -> dict:
        """Plain dict."""
        return asdict(self)


@lru_cache(maxsize=1)
def _caption_pattern() -> re.Pattern:
    def alt(names):
        return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"a (?P<size>{alt(SIZES)}) (?P<colour>{alt(COLOURS)}) (?P<shape>{alt(SHAPES)}) in the "
                      rf"(?P<position>{alt(POSITIONS)}) on an? (?P<background>{alt(BACKGROUNDS)}) background")


def parse_caption(text: str) -> Attributes | None:
    """The attributes a shapes-dataset caption asks for, or ``None`` when the text is not such a caption."""
    m = _caption_pattern().fullmatch(" ".join(text.lower().split()).rstrip("."))
    if not m:
        return None
    return Attributes(m["shape"], m["colour"], m["size"], m["position"], m["background"])


def all_combinations() -> list[Attributes]:
    """Every valid attribute combination (shape colour differs from background), in a fixed order."""
    return [Attributes(s, c, z, p, b) for s, c, z, p, b in
            itertools.product(SHAPES, COLOURS, SIZES, POSITIONS, BACKGROUNDS) if c != b]


def held_out(a: Attributes) -> bool:
    """True for the tenth of combinations reserved for evaluation (a stable hash of the caption)."""
    return int(hashlib.sha256(a.caption().encode()).hexdigest(), 16) % 10 == 0


def sample_attributes(rng: np.random.Generator, split: str = "train") -> Attributes:
    """A random combination from ``split`` ("train" or "held_out")."""
    pool = _POOLS[split]
    return pool[int(rng.integers(len(pool)))]


def caption_words() -> list[str]:
    """Every word any caption uses (for building the tokenizer)."""
    words = {"a", "in", "the", "on", "background"}
    for group in (SHAPES, COLOURS, BACKGROUNDS, SIZES, POSITIONS):
        for item in group:
            words.update(item.split())
    return sorted(words)


def render(a: Attributes, rng: np.random.Generator | None = None, size: int = IMAGE_SIZE) -> np.ndarray:
    """Draw the image (HxWx3 uint8). With ``rng``, position, size and colours get a small random jitter."""
    jitter = rng is not None
    scale = size / IMAGE_SIZE
    cx, cy = POSITIONS[a.position]
    ext = SIZES[a.size]
    if jitter:
        cx, cy = cx + rng.uniform(-1.5, 1.5), cy + rng.uniform(-1.5, 1.5)
        ext = ext * rng.uniform(0.9, 1.1)
    cx, cy, r = cx * scale, cy * scale, ext * scale / 2
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    dx, dy = xx - cx, yy - cy
    if a.shape == "circle":
        mask = dx ** 2 + dy ** 2 <= r ** 2
    elif a.shape == "square":
        mask = (np.abs(dx) <= r * 0.9) & (np.abs(dy) <= r * 0.9)
    elif a.shape == "triangle":  # pointing up
        t = (dy + r) / (2 * r)  # 0 at the apex row, 1 at the base
        mask = (dy >= -r) & (dy <= r) & (np.abs(dx) <= t * r)
    elif a.shape == "cross":
        arm = r / 3
        mask = ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    else:
        raise ValueError(f"unknown shape {a.shape}")
    fg = np.array(COLOURS[a.colour], np.float32)
    bg = np.array(BACKGROUNDS[a.background], np.float32)
    if jitter:
        fg = fg + rng.uniform(-12, 12, 3)
        bg = bg + rng.uniform(-12, 12, 3)
    img = np.where(mask[..., None], fg, bg)
    return np.clip(img, 0, 255).astype(np.uint8)


_ALL = all_combinations()
_POOLS = {"train": [a for a in _ALL if not held_out(a)], "held_out": [a for a in _ALL if held_out(a)]}


def held_out_prompts(n: int, seed: int = 0) -> list[Attributes]:
    """``n`` held-out combinations (distinct while there are enough), deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    pool = _POOLS["held_out"]
    order = rng.permutation(len(pool))
    return [pool[int(order[i % len(pool)])] for i in range(n)]
