"""Small helpers the graph rewrites share: reading a node attribute, and minting names no tensor or node has."""

from __future__ import annotations

import onnx
from onnx import helper


def node_attr(node: onnx.NodeProto, name: str, default):
    """The value of ``node``'s attribute ``name``, or ``default`` when it has none."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def unique_name(base: str, used: set[str]) -> str:
    """``base`` with underscores appended until it is not in ``used``; the result is added to ``used``."""
    name = base
    while name in used:
        name += "_"
    used.add(name)
    return name
