"""Per-op handlers saying which inputs of a node are weights to store as int8, and their channel axis.

A registry with a generic fallback (after onnxruntime's quantizer): ops not listed have no integer weights, but their
activations are still quantized by the plan.
"""

from __future__ import annotations

from typing import Callable

import onnx

from edgefusion.quant.graph_index import GraphIndex

Handler = Callable[[onnx.NodeProto, GraphIndex], list[tuple[int, int]]]
_HANDLERS: dict[str, Handler] = {}


def register_weight_handler(op_type: str):
    """Decorator: register ``fn(node, index) -> [(input slot, channel axis)]`` for an ONNX op type."""
    def deco(fn: Handler) -> Handler:
        _HANDLERS[op_type] = fn
        return fn
    return deco


def _is_float_init(name: str, idx: GraphIndex) -> bool:
    return name in idx.initializers and idx.elem_type.get(name) == onnx.TensorProto.FLOAT


@register_weight_handler("Conv")
def _conv(node, idx):
    return [(1, 0)] if _is_float_init(node.input[1], idx) else []


@register_weight_handler("Gemm")
def _gemm(node, idx):
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return [(1, 0 if trans_b else 1)] if _is_float_init(node.input[1], idx) else []


@register_weight_handler("MatMul")
def _matmul(node, idx):
    w = node.input[1]
    if _is_float_init(w, idx) and len(idx.initializers[w].dims) == 2:
        return [(1, 1)]  # [in, out]: one scale per output column
    return []


def weight_slots(node: onnx.NodeProto, idx: GraphIndex) -> list[tuple[int, int]]:
    """Weight inputs of ``node`` to quantize per channel; ``[]`` for ops without a handler (generic fallback)."""
    handler = _HANDLERS.get(node.op_type)
    return handler(node, idx) if handler else []
