"""Offline text alignment for the embedded shapes model: read the attributes back from an image (the embedded
analyser) and check each against what the prompt asked for."""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from edgefusion.embedded.shapes import (
    BACKGROUNDS,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    Attributes,
)

ATTRIBUTES = ("colour", "shape", "size", "position", "background")


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


def attribute_matches(image: np.ndarray, asked: Attributes) -> dict[str, bool]:
    """Per attribute: does what the analyser reads from ``image`` (HxWx3 in [0, 1]) equal what was asked?"""
    from edgefusion.embedded.analyzer import analyse

    reading = analyse(image)
    out = {k: getattr(reading, k) == getattr(asked, k) for k in ATTRIBUTES}
    out["all"] = all(out.values())
    return out


def attribute_accuracy(matches: list[dict[str, bool]]) -> dict[str, float] | None:
    """Fraction of images whose reading matches, per attribute and ``all``; ``None`` when there are none."""
    if not matches:
        return None
    return {k: float(np.mean([m[k] for m in matches])) for k in (*ATTRIBUTES, "all")}
