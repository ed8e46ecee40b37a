"""Cost of a layer at a precision from the device latency model (``edgefusion/latency``), in ms per image.

The UNet graph (at the model's own resolution) is costed three times on the device, every free layer at W8A8,
at W8A16 and at FP16 (layers the template pins to FP32 stay pinned; attention is tiled where the latency model
says it pays, as the export does). Each kernel's time is charged to the layer of the first node it runs, times
the UNet calls of one image (steps x CFG branches). Kernels of no layer (data movement, shape arithmetic) and the
per-graph overhead form a constant ``offset_ms``. For the three uniform policies the table adds up to the latency
model's figure; for a mixed policy it is only a guide: a tensor's width is set by its producer and consumers
together (a W8A8 matmul reading a 16-bit softmax output runs 16-bit) and the attention tiling is planned for the
whole assignment, so on sd-v1.5 the table prices ``default`` at 19.9 s where the whole model says 20.9 s. The policy search therefore re-costs its candidates with the whole
model (:func:`latency_cost_for` returns that function too) and checks the budget there.
"""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass, field

import onnx

from edgefusion.graph.group_norm_as_layer_norm import original_node_name
from edgefusion.quant.precision import Precision

_TILE_SUFFIX = re.compile(r"(__t\d+|__tile_split|__tile_concat|__split|__concat)$")
FREE = (Precision.W8A8, Precision.W8A16, Precision.FP16)


@dataclass
class LatencyCost:
    """Per-layer UNet latency per image on one device (additive; see the module docstring)."""

    device: str
    steps: int
    guidance: bool
    height: int
    width: int
    offset_ms: float
    table: dict[str, dict[str, float]] = field(default_factory=dict)  # layer -> precision -> ms per image
    uniform_ms: dict[str, float] = field(default_factory=dict)  # the latency model's figure per uniform policy
    unit: str = "ms"

    def layer_cost(self, stats, precision: Precision) -> float:
        """The layer's share of one image's UNet latency at ``precision`` (FP32 costs as FP16: pinned layers)."""
        p = Precision(precision)
        row = self.table.get(stats.name if hasattr(stats, "name") else str(stats), {})
        return float(row.get(p.value, row.get(Precision.FP16.value, 0.0)))

    def to_dict(self) -> dict:
        """Plain-dict form for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LatencyCost:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


def _resolved(layers, template, precision: Precision | None = None, precisions: dict | None = None):
    """The template's resolution with every free layer at ``precision`` (or as ``precisions`` says)."""
    from edgefusion.quant.policy import resolve_policy

    res = resolve_policy(template, layers)
    for name, prec in res.precisions.items():
        if prec is Precision.FP32:
            continue  # pinned by the template
        if precisions is not None:
            res.precisions[name] = Precision(precisions.get(name, prec))
        elif precision is not None:
            res.precisions[name] = precision
    return res


def _cost_graph(unet: onnx.ModelProto, layers, resolved, device, tiling: bool):
    """One UNet call under ``resolved`` on ``device`` (attention tiled where the planner says it pays, as the
    export does): the latency model's GraphCost."""
    from edgefusion.latency.cost_model import estimate_graph
    from edgefusion.deploy.tiling import plan_and_tile
    from edgefusion.graph.op_graph import build_op_graph
    from edgefusion.quant.integer_forms import integer_group_norm_nodes

    changes = tiling or integer_group_norm_nodes(layers, resolved)  # plan_and_tile rewrites the graph in place
    graph = copy.deepcopy(unet) if changes else unet
    plan, _ = plan_and_tile(graph, "unet", device, layers, resolved, tiling)
    return estimate_graph(build_op_graph(graph, "unet", plan), device)

def build_latency_cost(unet: onnx.ModelProto, device, steps: int, guidance: bool, template, height: int, width: int,
                       tiling: bool = True) -> LatencyCost:
    """The per-layer table of ``unet`` (a float graph traced at ``height`` x ``width``, the image size the latency
    is wanted for; weights need not be loaded)."""
    from edgefusion.deploy.estimate import calls_per_image
    from edgefusion.quant.layers import find_layers

    calls = calls_per_image(steps, guidance)["unet"]
    layers = find_layers(unet, "unet")
    owner = {n: la.name for la in layers if not la.passthrough for n in la.nodes}
    table: dict[str, dict[str, float]] = {la.name: {} for la in layers if not la.passthrough}
    offsets, uniform = [], {}
    for prec in FREE:
        gc = _cost_graph(unet, layers, _resolved(layers, template, prec), device, tiling)
        charged = 0.0
        for k in gc.kernels:
            layer = next((owner[b] for b in (original_node_name(_TILE_SUFFIX.sub("", o)) for o in k.ops)
                          if b in owner), None)
            if layer is not None:
                table[layer][prec.value] = table[layer].get(prec.value, 0.0) + k.ms * calls
                charged += k.ms * calls
        offsets.append(gc.ms * calls - charged)
        uniform[prec.value] = round(gc.ms * calls, 6)
    for row in table.values():
        for prec in FREE:
            row.setdefault(prec.value, 0.0)
    return LatencyCost(device=device.name, steps=steps, guidance=guidance, height=height, width=width,
                       offset_ms=round(sum(offsets) / len(offsets), 8),
                       table={n: {p: round(v, 8) for p, v in row.items()} for n, row in table.items()},
                       uniform_ms=uniform)


def exact_unet_ms(unet: onnx.ModelProto, device, steps: int, guidance: bool, template,
                  precisions: dict[str, Precision], tiling: bool = True, layers=None) -> float:
    """The latency model's UNet ms per image for one assignment (the whole model, not the additive table; with
    tiling the planner runs for this assignment: ~5 s on sd-v1.5 at 512x512, ~1 s without)."""
    from edgefusion.deploy.estimate import calls_per_image
    from edgefusion.quant.layers import find_layers

    layers = layers if layers is not None else find_layers(unet, "unet")
    gc = _cost_graph(unet, layers, _resolved(layers, template, precisions=precisions), device, tiling)
    return gc.ms * calls_per_image(steps, guidance)["unet"]


def unet_for_latency(source: dict, float_unet=None, graph_size: tuple[int, int] | None = None) -> onnx.ModelProto:
    """The UNet graph at the model's own size: ``float_unet`` when it was traced at that size, else a weight-free
    skeleton traced on the meta device (same exporter, same node and layer names)."""
    sampler = source["sampler"]
    native = (int(sampler["height"]), int(sampler["width"]))
    if float_unet is not None and tuple(graph_size or ()) == native:
        return onnx.load(str(float_unet), load_external_data=False)
    from edgefusion.latency.skeleton import build_skeletons
    from edgefusion.models.source import ModelSource

    return build_skeletons(ModelSource.from_dict(source), *native, components=("unet",))["unet"]


def latency_cost_for(source: dict, device, template, float_unet=None, graph_size: tuple[int, int] | None = None,
                     tiling: bool = True, keep: set[str] | None = None):
    """(table, whole-model cost function) for ``source``'s UNet on ``device``, sampled as the model's defaults say
    (its steps, its guidance, its size). ``keep``: the layers the policy search assigns (the profiled graph's);
    any other layer of the costed graph (a skeleton traced without graph optimisation has a few more) stays at
    the template's precision, and its time joins the offset."""
    from edgefusion.quant.layers import find_layers

    sampler = source["sampler"]
    steps, guidance = int(sampler["num_inference_steps"]), float(sampler["guidance_scale"]) > 1.0
    unet = unet_for_latency(source, float_unet, graph_size)
    table = build_latency_cost(unet, device, steps, guidance, template, int(sampler["height"]),
                               int(sampler["width"]), tiling)
    layers = find_layers(unet, "unet")
    if keep is not None:
        from edgefusion.quant.policy import resolve_policy

        fixed = resolve_policy(template, layers).precisions
        for name in [n for n in table.table if n not in keep]:
            row = table.table.pop(name)
            table.offset_ms = round(table.offset_ms + row.get(fixed[name].value, row[Precision.FP16.value]), 8)

    def whole(precisions: dict[str, Precision]) -> float:
        """Whole-model cost, attention tiled as the export's planner tiles this very assignment (tiling decided
        for a uniform precision does not carry over: on bk-sdm-tiny it misjudged `default` by 14%)."""
        return exact_unet_ms(unet, device, steps, guidance, template, precisions, tiling, layers)

    return table, whole
