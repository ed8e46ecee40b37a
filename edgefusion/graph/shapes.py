"""Shapes and storage types of every tensor of an ONNX graph, inferred on a weight-free copy (weights are never
loaded or copied)."""

from __future__ import annotations

import math

import onnx

# ops onnx infers no output shape for (GroupNormalization-21 is a function op): output shape = first input's
SAME_SHAPE_OPS = {"GroupNormalization"}

# storage kind of an ONNX element type, and bytes per element of each kind
ELEM_KIND = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.INT8: "int8",
             onnx.TensorProto.UINT8: "int8", onnx.TensorProto.INT16: "int16", onnx.TensorProto.UINT16: "int16",
             onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32", onnx.TensorProto.BOOL: "bool",
             onnx.TensorProto.DOUBLE: "int64"}
KIND_BYTES = {"int8": 1, "int16": 2, "fp16": 2, "fp32": 4, "int64": 8, "int32": 4, "bool": 1}

Shapes = dict[str, tuple[list[int | None] | None, int]]


def infer_weight_free(model: onnx.ModelProto, data_prop: bool = False) -> onnx.ModelProto:
    """A copy of ``model`` without weight payloads (shape and small constants kept), shape-inferred; best effort
    (the copy uninferred when onnx fails). Ops in ``SAME_SHAPE_OPS`` stand in as ``Identity`` in the copy, so
    the tensors after them keep their shapes (without it, every tensor after a GroupNorm was unknown)."""
    skel = onnx.ModelProto()
    skel.CopyFrom(model)
    for t in skel.graph.initializer:  # drop weight payloads, keep shape and other small constants
        large = t.data_location == onnx.TensorProto.EXTERNAL or len(t.raw_data) > 1024
        if large and t.data_type != onnx.TensorProto.INT64:
            t.ClearField("raw_data")
            del t.external_data[:]
            t.data_location = onnx.TensorProto.DEFAULT
    for node in skel.graph.node:
        if node.op_type in SAME_SHAPE_OPS:
            node.op_type, node.domain = "Identity", ""
            del node.input[1:]
            del node.attribute[:]
    try:
        return onnx.shape_inference.infer_shapes(skel, strict_mode=False, data_prop=data_prop)
    except Exception:  # inference is best effort; exporter value_info usually suffices
        return skel


def tensor_shapes(model: onnx.ModelProto) -> Shapes:
    """Shape (``None`` for unknown dims) and ONNX element type of every tensor, initializers included."""
    inferred = infer_weight_free(model, data_prop=True)
    out: Shapes = {}
    g = inferred.graph
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        if vi.type.HasField("tensor_type"):
            tt = vi.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim] \
                if tt.HasField("shape") else None
            out[vi.name] = (dims, tt.elem_type)
    for t in model.graph.initializer:
        out[t.name] = (list(t.dims), t.data_type)
    return out


def numel(dims: list[int | None] | None) -> int | None:
    """Number of elements of a shape; ``None`` when the shape or a dimension is unknown."""
    if dims is None or any(d is None for d in dims):
        return None
    return math.prod(dims) if dims else 1


def elem_bytes(elem_type: int) -> int:
    """Bytes per element of an ONNX element type (4 for types the NPU view does not distinguish)."""
    return KIND_BYTES.get(ELEM_KIND.get(elem_type, "fp32"), 4)
