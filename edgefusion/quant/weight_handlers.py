"""Per-op handlers saying which inputs of a node are weights to store as int8 (and their channel axis), and which
input is a bias to store as int32.

A registry with a generic fallback (after onnxruntime's quantizer): ops not listed have no integer weights, but their
activations are still quantized by the plan.
"""

from __future__ import annotations

from typing import Callable

import onnx

from edgefusion.quant.graph_index import GraphIndex

Handler = Callable[[onnx.NodeProto, GraphIndex], list[tuple[int, int]]]
_HANDLERS: dict[str, Handler] = {}
_BIAS_SLOTS: dict[str, int] = {"Conv": 2, "Gemm": 2}  # op type -> input slot of its bias
# float inputs that configure an op rather than feed its arithmetic: they stay float32 in FP16 layers
_PARAMETER_SLOTS: dict[str, set[int]] = {"Resize": {1, 2, 3}, "Pad": {1, 2}, "Upsample": {1}}


def register_weight_handler(op_type: str):
    """Decorator: register ``fn(node, index) -> [(input slot, channel axis)]`` for an ONNX op type."""
    def deco(fn: Handler) -> Handler:
        _HANDLERS[op_type] = fn
        return fn
    return deco


def is_float_init(name: str, idx: GraphIndex) -> bool:
    """Whether ``name`` is a float32 initializer of the graph ``idx`` indexes."""
    return name in idx.initializers and idx.elem_type.get(name) == onnx.TensorProto.FLOAT


@register_weight_handler("Conv")
def _conv(node, idx):
    return [(1, 0)] if is_float_init(node.input[1], idx) else []


@register_weight_handler("Gemm")
def _gemm(node, idx):
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return [(1, 0 if trans_b else 1)] if is_float_init(node.input[1], idx) else []


@register_weight_handler("MatMul")
def _matmul(node, idx):
    w = node.input[1]
    if is_float_init(w, idx) and len(idx.initializers[w].dims) == 2:
        return [(1, 1)]  # [in, out]: one scale per output column
    return []


def weight_slots(node: onnx.NodeProto, idx: GraphIndex) -> list[tuple[int, int]]:
    """Weight inputs of ``node`` to quantize per channel; ``[]`` for ops without a handler (generic fallback)."""
    handler = _HANDLERS.get(node.op_type)
    return handler(node, idx) if handler else []


def bias_slot(node: onnx.NodeProto, idx: GraphIndex) -> int | None:
    """Input slot of ``node``'s bias when it is a 1-D float initializer (Conv, Gemm); None otherwise."""
    slot = _BIAS_SLOTS.get(node.op_type)
    if slot is None or len(node.input) <= slot or not is_float_init(node.input[slot], idx):
        return None
    return slot if len(idx.initializers[node.input[slot]].dims) == 1 else None


def fp16_weight_inputs(node: onnx.NodeProto, idx: GraphIndex) -> list[str]:
    """Float initializers an FP16 ``node`` reads as data (stored as float16); configuration inputs such as
    Resize's scales are left alone."""
    skip = _PARAMETER_SLOTS.get(node.op_type, set())
    return [x for i, x in enumerate(node.input) if i not in skip and is_float_init(x, idx)]
