"""The float graph in the form the quantizer quantizes it under a policy: integer GroupNorm layers written as a
layer norm plus a depthwise convolution (``edgefusion.graph.group_norm_as_layer_norm``), the form an NPU runs as
integer ops, and the timestep sinusoid in a form that stays accurate in float16
(``edgefusion.graph.timestep_sinusoid``). The export, the latency model's float-graph-plus-plan view and the policy
search's cost tables all go through here, so they price and quantize the same graph."""

from __future__ import annotations

from pathlib import Path

import onnx

from edgefusion.graph.group_norm_as_layer_norm import group_norms_as_layer_norms
from edgefusion.graph.timestep_sinusoid import exact_timestep_sinusoids
from edgefusion.quant.layers import Layer, find_layers
from edgefusion.quant.policy import ResolvedPolicy


def integer_group_norm_nodes(layers: list[Layer], resolved: ResolvedPolicy) -> set[str]:
    """Node names of the GroupNorm layers ``resolved`` makes integer."""
    return {n for la in layers if la.op_type == "GroupNorm" and la.name in resolved.precisions
            and resolved.precisions[la.name].is_integer for n in la.nodes}


def write_integer_forms(model: onnx.ModelProto, layers: list[Layer], resolved: ResolvedPolicy, component: str,
                        base_dir: str | Path | None = None, with_values: bool = True) -> list[Layer]:
    """Rewrite ``model`` in place for ``resolved``; returns its layers afterwards (the same names, so ``resolved``
    still applies), or ``layers`` itself when nothing was rewritten. ``base_dir``: where the graph's external weights
    live. ``with_values=False`` for a weight-free graph (see ``group_norms_as_layer_norms``)."""
    nodes = integer_group_norm_nodes(layers, resolved)
    changed = bool(nodes) and group_norms_as_layer_norms(model, nodes, base_dir, with_values)
    changed = exact_timestep_sinusoids(model) > 0 or changed
    return find_layers(model, component) if changed else layers
