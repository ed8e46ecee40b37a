"""Shape and type inference on a weight-free copy of a graph (weights are never loaded or copied)."""

from __future__ import annotations

import onnx

# ops onnx infers no output shape for (GroupNormalization-21 is a function op): output shape = first input's
SAME_SHAPE_OPS = {"GroupNormalization"}


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
