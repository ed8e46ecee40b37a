"""Offline text alignment for the embedded shapes model: read the attributes back from an image (the embedded
analyser) and check each against what the prompt asked for."""

from __future__ import annotations

import numpy as np

from edgefusion.embedded.shapes import Attributes, parse_caption  # noqa: F401 (parse_caption: part of this API)

ATTRIBUTES = ("colour", "shape", "size", "position", "background")


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
