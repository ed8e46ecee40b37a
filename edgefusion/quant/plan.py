"""Decide, from layer precisions alone, which tensors get which treatment (no weights or data needed).

Rules (an NPU's view of a mixed-precision graph):
* A tensor on a layer boundary is quantized once, right after its producer, at the widest integer width asked for
  by its producer and its integer consumers (so the logits entering a W8A16 softmax are 16-bit even though the
  MatMul producing them is W8A8, and the probabilities leave at 16 bits into the next MatMul).
* Passthrough ops (reshape, transpose, slice ...) are transparent: their consumers' requests reach the source tensor.
* A boundary tensor of an FP16 layer that no integer neighbour asks for is rounded through float16.
* Weights of integer layers are int8, symmetric, per output channel; every float initializer of an FP16 layer is
  stored as float16. Biases and norm parameters of integer layers stay float (an NPU keeps them at high precision).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from edgefusion.quant.graph_index import GraphIndex
from edgefusion.quant.layers import Layer
from edgefusion.quant.policy import ResolvedPolicy
from edgefusion.quant.precision import Precision
from edgefusion.quant.weight_handlers import weight_slots


@dataclass
class QuantPlan:
    """Which tensors get integer QDQ (and at how many bits), fp16 rounding, or weight conversion."""

    act_bits: dict[str, int] = field(default_factory=dict)  # tensor -> 8 | 16
    act_owner: dict[str, str] = field(default_factory=dict)  # tensor -> layer whose precision put it there
    fp16_tensors: list[str] = field(default_factory=list)
    int8_weights: dict[str, int] = field(default_factory=dict)  # initializer -> channel axis
    fp16_weights: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """Counts for the manifest."""
        return {"activation_qdq_8bit": sum(1 for b in self.act_bits.values() if b == 8),
                "activation_qdq_16bit": sum(1 for b in self.act_bits.values() if b == 16),
                "fp16_rounded_tensors": len(self.fp16_tensors), "int8_weights": len(self.int8_weights),
                "fp16_weights": len(self.fp16_weights)}


def plan_quantization(model: onnx.ModelProto, layers: list[Layer], resolved: ResolvedPolicy,
                      index: GraphIndex | None = None) -> QuantPlan:
    """Build the :class:`QuantPlan` for ``model`` under ``resolved`` precisions."""
    idx = index or GraphIndex.build(model)
    layer_of: dict[str, Layer] = {}
    for layer in layers:
        for n in layer.nodes:
            layer_of[n] = layer

    def precision(layer: Layer | None) -> Precision | None:
        return None if layer is None or layer.passthrough else resolved.precisions.get(layer.name)

    def consumer_bits(tensor: str, own: Layer | None, seen: set[str]) -> list[tuple[int, str]]:
        out = []
        for node in idx.consumers.get(tensor, []):
            layer = layer_of[node.name]
            if layer is own:
                continue
            if layer.passthrough:
                for o in node.output:
                    if o in idx.activations and o not in seen:
                        seen.add(o)
                        out += consumer_bits(o, own, seen)
                continue
            p = precision(layer)
            if p is not None and p.is_integer and tensor in idx.activations:
                out.append((p.activation_bits, layer.name))
        return out

    plan = QuantPlan()
    nodes_by_name = {n.name: n for n in model.graph.node}
    boundary: list[tuple[str, Layer | None]] = [(t, None) for t in idx.graph_inputs]
    for layer in layers:
        if layer.passthrough:
            continue
        members = set(layer.nodes)
        for node in (nodes_by_name[n] for n in layer.nodes):
            for o in node.output:
                if not o:
                    continue
                external = [c for c in idx.consumers.get(o, []) if c.name not in members]
                if external or o in idx.graph_outputs:
                    boundary.append((o, layer))
    for tensor, layer in boundary:
        if tensor not in idx.activations:
            continue
        requests = consumer_bits(tensor, layer, {tensor})
        p = precision(layer)
        if p is not None and p.is_integer:
            requests.append((p.activation_bits, layer.name))
        if requests:
            own = layer.name if layer is not None else None
            bits, owner = max(requests, key=lambda r: (r[0], r[1] == own, r[1]))  # ties: the producer owns it
            plan.act_bits[tensor] = bits
            plan.act_owner[tensor] = owner
        elif p is Precision.FP16:
            plan.fp16_tensors.append(tensor)

    for layer in layers:
        p = precision(layer)
        if p is None or p is Precision.FP32:
            continue
        for node in (nodes_by_name[n] for n in layer.nodes):
            if p.is_integer:
                for slot, axis in weight_slots(node, idx):
                    plan.int8_weights.setdefault(node.input[slot], axis)
            else:
                for name in node.input:
                    if name in idx.initializers and idx.elem_type.get(name) == onnx.TensorProto.FLOAT:
                        plan.fp16_weights.append(name)
    plan.fp16_weights = sorted(set(plan.fp16_weights) - set(plan.int8_weights))
    return plan
