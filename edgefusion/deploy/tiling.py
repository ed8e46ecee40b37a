"""Tile a graph's attention for a device: sites from :mod:`edgefusion.tiling.attention`, choices from the planner
priced by the device latency model, the rewrite applied in place."""

from __future__ import annotations

import json
import re

import onnx

from edgefusion.graph.op_graph import build_op_graph
from edgefusion.latency.cost_model import site_cost_ms
from edgefusion.latency.device import DeviceProfile
from edgefusion.tiling.attention import find_attention_sites, tile_attention
from edgefusion.tiling.planner import plan_attention_tiling

TILE_TENSOR = re.compile(r"(.*)__t\d+")
_PRICES: dict[str, dict] = {}  # device profile (JSON) -> site signature -> candidate prices


def _prices(device: DeviceProfile) -> dict:
    key = json.dumps(device.to_dict(), sort_keys=True)
    if key not in _PRICES and len(_PRICES) >= 8:
        _PRICES.pop(next(iter(_PRICES)))
    return _PRICES.setdefault(key, {})


def tile_for_device(model: onnx.ModelProto, component: str, device: DeviceProfile, plan=None) -> dict:
    """Tile ``model``'s attention in place where the latency model says it pays; returns the decisions
    (softmax node -> {heads, block, tiles, ms_untiled, ms_tiled}) for the sites it changed."""
    sites = find_attention_sites(model)
    if not sites:
        return {}
    choices = plan_attention_tiling(build_op_graph(model, component, plan), sites,
                                    lambda graph: site_cost_ms(graph, device), memo=_prices(device))
    chosen = {name: c for name, c in choices.items() if c.tiled}
    if chosen:
        tile_attention(model, {name: (c.heads, c.block) for name, c in chosen.items()})
    return {name: {"heads": c.heads, "block": c.block, "tiles": c.tiles, "ms_untiled": c.ms_untiled,
                   "ms_tiled": c.ms_tiled} for name, c in chosen.items()}


def tile_graph_file(path, component: str, device: DeviceProfile, out_path=None) -> dict:
    """:func:`tile_for_device` on the graph file at ``path`` (structure only: external weights stay where they are),
    written back to ``path`` or to ``out_path`` beside it (sharing the weights); nothing is written when no site
    pays. Returns the decisions."""
    model = onnx.load(str(path), load_external_data=False)
    decided = tile_for_device(model, component, device)
    if decided:
        onnx.save(model, str(out_path or path))
    return decided


def extend_plan(plan, model: onnx.ModelProto) -> None:
    """Tensors the tiler added take the storage type of the tensor they are a piece of: tile tensors
    (``<name>__t<i>``) that of ``<name>``, the outputs of its splits and concats that of their first input."""
    def inherit(t: str, origin: str) -> None:
        if origin in plan.act_bits:
            plan.act_bits[t] = plan.act_bits[origin]
        elif origin in plan.fp16_tensors:
            plan.fp16_tensors.append(t)
    for node in model.graph.node:
        if "__tile_" in node.name:  # the tiler's Split / Concat
            for t in node.output:
                inherit(t, node.input[0])
        for t in node.output:
            m = TILE_TENSOR.fullmatch(t)
            if m:
                inherit(t, m.group(1))


def plan_and_tile(graph: onnx.ModelProto, component: str, device: DeviceProfile, layers, resolved,
                  tiling: bool = True):
    """The exporter's QuantPlan for ``resolved`` on the float ``graph``, with the attention tiled in place where the
    latency model says it pays (the plan extended to the tile tensors); returns (plan, tiling decisions). ``graph``
    is changed in place: integer GroupNorms take the form the exporter gives them (``quant/integer_forms.py``,
    constants as zeros: only shapes are costed), then the tiling."""
    from edgefusion.quant.integer_forms import write_integer_forms
    from edgefusion.quant.plan import plan_quantization

    layers = write_integer_forms(graph, layers, resolved, component, with_values=False)
    plan = plan_quantization(graph, layers, resolved)
    decided = tile_for_device(graph, component, device, plan) if tiling else {}
    if decided:
        extend_plan(plan, graph)
    return plan, decided
