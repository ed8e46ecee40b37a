"""Cost of a layer at a precision: a MAC/byte roofline proxy (the fallback when no device latency table is built).

The policy search normally prices layers with the device latency model (:mod:`.latency_cost`, ms per image).
Without one (a report written before it existed, or built with ``--device none``) it prices a layer with nominal
phone-NPU figures: ``max(compute time, memory time)`` where compute = MACs / MAC rate + element-wise ops / vector
rate (rates halve for 16-bit activations, quarter for FP16) and memory = weight bytes + boundary activation bytes
over a nominal DRAM bandwidth. The unit is *proxy-ms*, a ranking device, not a latency estimate. Anything with a
``layer_cost(stats, precision) -> float`` method and a ``unit`` can stand in (see :class:`CostModel`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol

from edgefusion.quant.precision import Precision


@dataclass
class LayerStats:
    """What a layer does per UNet evaluation (batch 1), measured on the exported graph."""

    name: str
    op_type: str
    macs: int  # multiply-accumulates (Conv, MatMul, Gemm)
    vector_ops: int  # element-wise / normalisation / softmax output elements
    weight_params: int  # float initializer elements the layer reads
    act_elems: int  # elements of its boundary activations (inputs and outputs)

    def to_dict(self) -> dict:
        """Plain-dict form for JSON."""
        return asdict(self)


class CostModel(Protocol):
    """What the policy search needs from a cost model."""

    unit: str

    def layer_cost(self, stats: LayerStats, precision: Precision) -> float:
        """Cost of one layer at one precision (additive over layers)."""


@dataclass
class ProxyCost:
    """Nominal NPU roofline (see the module docstring); figures are per second."""

    unit: str = "proxy-ms"
    int8_macs_per_s: float = 8e12
    int8_vector_ops_per_s: float = 256e9
    bytes_per_s: float = 50e9
    rate_factor: dict[str, float] = field(default_factory=lambda: {"W8A8": 1.0, "W8A16": 0.5, "FP16": 0.25,
                                                                   "FP32": 1 / 16})
    weight_bytes: dict[str, float] = field(default_factory=lambda: {"W8A8": 1, "W8A16": 1, "FP16": 2, "FP32": 4})
    act_bytes: dict[str, float] = field(default_factory=lambda: {"W8A8": 1, "W8A16": 2, "FP16": 2, "FP32": 4})

    def layer_cost(self, stats: LayerStats, precision: Precision) -> float:
        """``max(compute, memory)`` time of the layer, in milliseconds of the nominal device."""
        p = Precision(precision).value
        f = self.rate_factor[p]
        compute = stats.macs / (self.int8_macs_per_s * f) + stats.vector_ops / (self.int8_vector_ops_per_s * f)
        memory = (stats.weight_params * self.weight_bytes[p] + stats.act_elems * self.act_bytes[p]) / self.bytes_per_s
        return 1e3 * max(compute, memory)

    def describe(self) -> dict:
        """The figures used, for the report's provenance."""
        return {"model": "MAC/byte roofline proxy (nominal NPU figures, not a latency model)", **asdict(self)}


def policy_cost(stats: dict[str, LayerStats], precisions: dict[str, Precision], model: CostModel) -> float:
    """Total cost of the layers in ``precisions`` (layers without stats cost nothing), plus the model's
    ``offset_ms`` (what no layer's precision changes) when it has one."""
    return float(sum(model.layer_cost(stats[n], p) for n, p in precisions.items() if n in stats)) + \
        float(getattr(model, "offset_ms", 0.0))


def measure_layer_stats(sim) -> dict[str, LayerStats]:
    """MACs, element-wise ops, weights and boundary activations of every layer (shapes of the first sample)."""
    graph = sim.graph
    shapes = dict(sim.shapes)
    for name, w in graph.weights.items():
        shapes.setdefault(name, tuple(w.shape))

    def numel(name: str) -> int:
        n = 1
        for d in shapes.get(name, ()):
            n *= int(d)
        return n

    node_by = {n.name: n for n in graph.nodes}
    site_elems = [numel(s.tensor) for s in sim.sites.sites]
    out = {}
    for layer in sim.layers:
        if layer.passthrough:
            continue
        macs = vec = 0
        for node in (node_by[n] for n in layer.nodes if n in node_by):
            o = numel(node.outputs[0])
            if node.op_type == "Conv":
                w = shapes.get(node.inputs[1], (1, 1))
                k = 1
                for d in w[1:]:
                    k *= int(d)
                macs += o * k
            elif node.op_type in ("MatMul", "Gemm"):
                a = shapes.get(node.inputs[0], (1,))
                trans_a = node.op_type == "Gemm" and node.attrs.get("transA", 0)
                macs += o * int(a[0] if trans_a else a[-1])
            elif node.op_type not in ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Split", "Concat",
                                      "Identity", "Cast", "Expand", "Flatten"):
                vec += o
        weights = sum(numel(w) for w in set(sim.sites.float_inits.get(layer.name, [])))
        acts = sum(site_elems[i] for i in set(sim.sites.layer_sites.get(layer.name, [])))
        out[layer.name] = LayerStats(layer.name, layer.op_type, int(macs), int(vec), int(weights), int(acts))
    return out
