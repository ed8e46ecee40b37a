"""Decide, from layer precisions alone, which tensors get which treatment (no weights or data needed).

Rules (an NPU's view of a mixed-precision graph):
* A tensor on a layer boundary is quantized once, right after its producer, at the widest integer width asked for
  by its producer and its integer consumers (so the logits entering a W8A16 softmax are 16-bit even though the
  MatMul producing them is W8A8, and the probabilities leave at 16 bits into the next MatMul).
* A weighted layer (Conv, Gemm, Linear with int8 weights) reads and writes one width: a W8A8 one with a 16-bit
  boundary tensor (a neighbour asked for it) is *promoted* to W8A16, until no such layer is left (the profiler's
  ``QuantSites.settle`` does the same). Qualcomm's HTP rejects a weighted layer whose input and output widths
  differ and leaves its weight ``DequantizeLinear`` on the CPU; a promotion only adds precision.
  ``QuantPlan.promoted`` lists them.
* Passthrough ops (reshape, transpose, slice ...) are transparent: their consumers' requests reach the source tensor.
* A boundary tensor of an FP16 layer that no integer neighbour asks for is rounded through float16.
* Weights of integer layers are int8, symmetric, per output channel (per tensor for the op types a device lists in
  ``weights.per_tensor_with_16bit_activations`` when their input is 16-bit); every float initializer of an FP16
  layer is stored as float16.
* 16-bit activations are uint16, asymmetric. Where a device lists an op type in
  ``activations.signed_16bit_second_input``, an op of that type whose two inputs are both 16-bit activations reads
  its second input requantized to int16, symmetric (zero point 0), over its source's range (Qualcomm's HTP: the QNN
  execution provider converts a uint16 second input to 8 bits; an int16 one it takes as it is).
* A partial sum inside a layer (a convolution split over a concatenation's inputs,
  ``edgefusion.graph.split_concat_convs``) is an accumulator output: 16-bit QDQ in an integer layer, float16 in an
  FP16 one.
* Biases of integer Conv/Gemm layers and of Linear layers (MatMul + Add of a 1-D constant) are int32 with scale =
  input scale x weight scale and zero point 0, as deployment compilers (and onnxruntime's integer kernels) expect;
  a bias whose input is not quantized stays float.
* Integer SiLU, GELU and norm layers are written so an NPU runs every op in them as an integer op (Qualcomm's HTP
  leaves any float tensor in such a layer as a float island between a Dequantize and a Quantize): every tensor
  inside the layer is quantized at the layer's width; a ``LayerNormalization``'s scale is uint8 (asymmetric, per
  tensor) and its bias int32 (scale = input scale x norm scale). A GroupNorm written as a layer norm
  (``edgefusion.graph.group_norm_as_layer_norm``) ends in a depthwise convolution, quantized as any convolution.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import onnx

from edgefusion.graph.split_concat_convs import is_partial_sum
from edgefusion.quant.graph_index import GraphIndex
from edgefusion.quant.layers import PASSTHROUGH_OPS, Layer
from edgefusion.quant.policy import ResolvedPolicy
from edgefusion.quant.precision import Precision
from edgefusion.quant.storage import StorageNeeds
from edgefusion.quant.weight_handlers import bias_slot, fp16_weight_inputs, is_float_init, weight_slots

# layers of these types with int8 weights read and write one activation width (see the module's rules)
WEIGHTED_LAYER_TYPES = frozenset({"Conv", "Gemm", "MatMul"})
# integer layers of these types have every tensor inside them quantized (an NPU runs their ops one by one)
CHAINED_LAYER_TYPES = frozenset({"SiLU", "GELU", "GroupNorm", "LayerNorm"})
NORM_LAYER_TYPES = frozenset({"GroupNorm", "LayerNorm"})
NORM_SCALE_BITS = 8  # a quantized LayerNormalization's scale (the HTP takes uint8, not uint16 or int8)


@dataclass
class QuantPlan:
    """Which tensors get integer QDQ (and at how many bits), fp16 rounding, or weight conversion."""

    act_bits: dict[str, int] = field(default_factory=dict)  # tensor -> 8 | 16
    act_owner: dict[str, str] = field(default_factory=dict)  # tensor -> layer whose precision put it there
    fp16_tensors: list[str] = field(default_factory=list)
    int8_weights: dict[str, int | None] = field(default_factory=dict)  # initializer -> channel axis (None: tensor)
    fp16_weights: list[str] = field(default_factory=list)
    int32_biases: dict[str, tuple[str, str]] = field(default_factory=dict)  # bias -> (input activation, weight)
    const_bits: dict[str, int] = field(default_factory=dict)  # initializer -> bits (uint, asymmetric per tensor)
    promoted: dict[str, Precision] = field(default_factory=dict)  # layer -> the precision it was promoted to
    signed_16bit_inputs: dict[str, str] = field(default_factory=dict)  # node -> source of its int16 second input

    def summary(self) -> dict:
        """Counts for the manifest."""
        return {"activation_qdq_8bit": sum(1 for b in self.act_bits.values() if b == 8),
                "activation_qdq_16bit": sum(1 for b in self.act_bits.values() if b == 16),
                "fp16_rounded_tensors": len(self.fp16_tensors), "int8_weights": len(self.int8_weights),
                "int8_weights_per_tensor": sum(1 for a in self.int8_weights.values() if a is None),
                "fp16_weights": len(self.fp16_weights), "int32_biases": len(self.int32_biases),
                "int16_second_inputs": len(self.signed_16bit_inputs),
                "uint_constants": len(self.const_bits), "promoted_layers": sorted(self.promoted)}


def quantized_source(tensor: str, producer: Mapping[str, onnx.NodeProto],
                     stop: set[str] | frozenset[str] = frozenset()) -> str:
    """The tensor whose QDQ an op input reads: ``tensor`` followed up (``producer``: tensor -> the node writing it)
    through reshapes/transposes/slices, stopping at a tensor in ``stop`` (the layer-boundary tensors: a reshape that
    is a layer of its own, e.g. one whose shape is computed, has its output quantized, and that is what the op
    reads; or the quantized tensors themselves)."""
    node = producer.get(tensor)
    while tensor not in stop and node is not None and node.op_type in PASSTHROUGH_OPS and node.input:
        tensor = node.input[0]
        node = producer.get(tensor)
    return tensor


def is_internal(node: onnx.NodeProto, layer: Layer) -> bool:
    """Whether ``node``'s outputs inside ``layer`` are quantized in an integer layer (see the module's rules)."""
    return layer.op_type in CHAINED_LAYER_TYPES and node.op_type not in PASSTHROUGH_OPS


def layer_constants(nodes: list[onnx.NodeProto], idx: GraphIndex, op_type: str) -> list[tuple[str, int]]:
    """``(initializer, bits)`` of the float constants an integer norm layer quantizes asymmetrically per tensor
    (a ``LayerNormalization``'s scale)."""
    if op_type not in NORM_LAYER_TYPES:
        return []
    return [(node.input[1], NORM_SCALE_BITS) for node in nodes
            if node.op_type == "LayerNormalization" and len(node.input) > 1 and is_float_init(node.input[1], idx)]


def layer_biases(nodes: list[onnx.NodeProto], idx: GraphIndex,
                 stop: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, str, str]]:
    """``(bias, input activation, weight)`` of the integer-capable ops among a layer's ``nodes``: the bias input
    of Conv/Gemm, or the 1-D constant added to a MatMul's output (a Linear layer), when the op has an int8 weight;
    the bias of a ``LayerNormalization`` with a float scale (quantized with that scale, :func:`layer_constants`).
    A bias other nodes read too stays float: its int32 form would carry this layer's scale into them (the export
    gives every bias its own initializer first, ``edgefusion.graph.unshare_biases``). ``stop``: the boundary tensors
    (:func:`quantized_source`)."""
    out = []
    weighted = {}
    for node in nodes:
        if (node.op_type == "LayerNormalization" and len(node.input) > 2 and is_float_init(node.input[1], idx)
                and is_float_init(node.input[2], idx) and len(idx.consumers.get(node.input[2], [])) == 1):
            out.append((node.input[2], quantized_source(node.input[0], idx.producer, stop), node.input[1]))
            continue
        slots = weight_slots(node, idx)
        if not slots:
            continue
        weighted[node.output[0]] = node
        b = bias_slot(node, idx)
        if b is not None and len(idx.consumers.get(node.input[b], [])) == 1:
            out.append((node.input[b], quantized_source(node.input[0], idx.producer, stop), node.input[slots[0][0]]))
    for node in nodes:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        for a, c in (node.input, node.input[::-1]):
            mm = weighted.get(a)
            if (mm is not None and mm.op_type == "MatMul" and c in idx.initializers
                    and idx.elem_type.get(c) == onnx.TensorProto.FLOAT and len(idx.initializers[c].dims) == 1
                    and len(idx.consumers.get(c, [])) == 1):
                out.append((c, quantized_source(mm.input[0], idx.producer, stop), mm.input[1]))
                break
    return out


def plan_quantization(model: onnx.ModelProto, layers: list[Layer], resolved: ResolvedPolicy,
                      index: GraphIndex | None = None, storage: StorageNeeds = StorageNeeds()) -> QuantPlan:
    """Build the :class:`QuantPlan` for ``model`` under ``resolved`` precisions; ``storage``: what the device
    needs of the stored tensors (per-tensor weights behind 16-bit inputs, int16 second inputs; its profile says)."""
    idx = index or GraphIndex.build(model)
    layer_of: dict[str, Layer] = {}
    for layer in layers:
        for n in layer.nodes:
            layer_of[n] = layer

    promoted: dict[str, Precision] = {}

    def precision(layer: Layer | None) -> Precision | None:
        if layer is None or layer.passthrough:
            return None
        return promoted.get(layer.name) or resolved.precisions.get(layer.name)

    def consumer_layers(tensor: str, own: Layer | None, seen: set[str]) -> list[Layer]:
        out = []
        for node in idx.consumers.get(tensor, []):
            layer = layer_of[node.name]
            if layer is own:
                continue
            if layer.passthrough:
                for o in node.output:
                    if o in idx.activations and o not in seen:
                        seen.add(o)
                        out += consumer_layers(o, own, seen)
                continue
            out.append(layer)
        return out

    nodes_by_name = {n.name: n for n in model.graph.node}
    boundary: list[tuple[str, Layer | None]] = [(t, None) for t in idx.graph_inputs]
    inside: list[tuple[str, Layer, bool]] = []  # (tensor, layer, is a partial sum) quantized inside their layer
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
                elif is_partial_sum(node) and o in idx.activations:
                    inside.append((o, layer, True))
                elif is_internal(node, layer) and o in idx.activations:
                    inside.append((o, layer, False))
    boundary = [(t, layer) for t, layer in boundary if t in idx.activations]
    readers = {t: consumer_layers(t, layer, {t}) for t, layer in boundary}

    def assign() -> QuantPlan:
        plan = QuantPlan()
        for o, layer, partial in inside:
            p = precision(layer)
            if partial and p is not None and p.is_integer:
                plan.act_bits[o], plan.act_owner[o] = 16, layer.name
            elif partial and p is Precision.FP16:
                plan.fp16_tensors.append(o)
            elif not partial and p is not None and p.is_integer:
                plan.act_bits[o], plan.act_owner[o] = p.activation_bits, layer.name
        for tensor, layer in boundary:
            requests = [(q.activation_bits, c.name) for c in readers[tensor]
                        if (q := precision(c)) is not None and q.is_integer]
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
        return plan

    weighted = {layer.name for layer in layers if not layer.passthrough and layer.op_type in WEIGHTED_LAYER_TYPES
                and any(weight_slots(nodes_by_name[n], idx) for n in layer.nodes)}
    while True:  # promote W8A8 weighted layers touching a 16-bit boundary tensor, until none is left
        plan = assign()
        wider = {c.name for t, layer in boundary if plan.act_bits.get(t) == 16
                 for c in [*readers[t], *([layer] if layer is not None else [])]
                 if c.name in weighted and precision(c) is Precision.W8A8}
        if not wider:
            break
        promoted.update(dict.fromkeys(wider, Precision.W8A16))
    plan.promoted = dict(sorted(promoted.items()))
    stop = frozenset(t for t, _ in boundary)

    for layer in layers:
        p = precision(layer)
        if p is None or p is Precision.FP32:
            continue
        if p.is_integer:
            members = [nodes_by_name[n] for n in layer.nodes]
            for bias, source, weight in layer_biases(members, idx, stop):
                plan.int32_biases[bias] = (source, weight)
            for const, bits in layer_constants(members, idx, layer.op_type):
                plan.const_bits.setdefault(const, bits)
        for node in (nodes_by_name[n] for n in layer.nodes):
            if p.is_integer:
                a16 = node.op_type in storage.per_tensor_16bit_input_weights and \
                    plan.act_bits.get(quantized_source(node.input[0], idx.producer, stop)) == 16
                for slot, axis in weight_slots(node, idx):
                    plan.int8_weights.setdefault(node.input[slot], None if a16 else axis)
            else:
                plan.fp16_weights += fp16_weight_inputs(node, idx)
    plan.fp16_weights = sorted(set(plan.fp16_weights) - set(plan.int8_weights) - set(plan.int32_biases)
                               - set(plan.const_bits))
    plan.signed_16bit_inputs = signed_second_inputs(model, idx, plan, storage.signed_16bit_second_input, stop)
    plan.int32_biases = usable_biases(plan)
    return plan


def signed_second_inputs(model: onnx.ModelProto, idx: GraphIndex, plan: QuantPlan, op_types: frozenset[str],
                         stop: set[str] | frozenset[str] = frozenset()) -> dict[str, str]:
    """``{node: source}`` for each op of ``op_types`` whose two inputs are both 16-bit activations (e.g. attention
    scores and the probabilities times the values): its second input is read requantized to int16 over the range of
    ``source``, the quantized tensor it comes from; ``stop``: the boundary tensors (:func:`quantized_source`)."""
    out = {}
    for node in model.graph.node:
        if node.op_type not in op_types or len(node.input) < 2 or node.input[1] in idx.initializers:
            continue
        a, b = (quantized_source(t, idx.producer, stop) for t in node.input[:2])
        if plan.act_bits.get(a) == 16 and plan.act_bits.get(b) == 16:
            out[node.name] = b
    return out


def usable_biases(plan: QuantPlan) -> dict[str, tuple[str, str]]:
    """The plan's int32 biases whose input is quantized and whose weight has an integer scale (others stay float)."""
    return {b: v for b, v in plan.int32_biases.items()
            if v[0] in plan.act_bits and (v[1] in plan.int8_weights or v[1] in plan.const_bits)}
