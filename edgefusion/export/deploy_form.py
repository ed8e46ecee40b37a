"""Graph forms every exported graph is written in, so that NPU compilers and onnxruntime clients accept it.

Passes run on the emitted QDQ / fp16 graph (structure only; external weights stay where they are) before the
graph is verified, so the manifest's figures describe the graph written:

* :func:`fold_small_constant_casts` -- ``Cast`` of a small constant (a Resize scale, a mask value) becomes the
  constant itself (exact: float16 -> float32 loses nothing). Shape inference cannot see through a Cast, so a
  Resize whose scales were stored as float16 left every later tensor of the VAE decoder unshaped.
* :func:`int32_input_ids` -- the text encoder takes int32 token ids (diffusers' ONNX pipeline feeds int32, optimum
  casts to whatever the graph declares, and the HTP has no int64 tensors).
* :func:`write_intermediate_shapes` -- every intermediate tensor's shape is
  written into the graph (run last, after tiling and partitioning).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

SMALL_CONSTANT = 64  # elements
# consumers whose constant inputs are parameters of the op (scales, fill values, shapes), not layer weights
PARAMETER_CONSUMERS = {"Resize", "Where", "Expand", "Reshape", "Pad", "Range", "ConstantOfShape", "Tile", "Slice",
                       "Clip", "Pow"}


def fold_small_constant_casts(model: onnx.ModelProto) -> int:
    """Replace ``Cast(initializer)`` by the converted initializer when the constant is small (at most
    ``SMALL_CONSTANT`` elements, inline) and is a parameter of its consumers (a Resize scale, a Where fill value) or
    a scalar; layer weights keep their stored precision. Returns how many were folded."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    uses, consumers = {}, {}
    for n in g.node:
        for x in n.input:
            uses[x] = uses.get(x, 0) + 1
            consumers.setdefault(x, set()).add(n.op_type)
    folded, keep = 0, []
    for node in g.node:
        src = inits.get(node.input[0]) if node.op_type == "Cast" and node.input else None
        size = int(np.prod(src.dims)) if src is not None else 0
        parameter = src is not None and (size <= 1 or consumers.get(node.output[0], set()) <= PARAMETER_CONSUMERS)
        if not parameter or src.data_location == TensorProto.EXTERNAL or size > SMALL_CONSTANT:
            keep.append(node)
            continue
        to = next(a.i for a in node.attribute if a.name == "to")
        value = numpy_helper.to_array(src).astype(onnx.helper.tensor_dtype_to_np_dtype(to))
        g.initializer.append(numpy_helper.from_array(value, node.output[0]))
        uses[src.name] -= 1
        if uses[src.name] == 0:
            g.initializer.remove(src)
        folded += 1
    del g.node[:]
    g.node.extend(keep)
    return folded


def int32_input_ids(model: onnx.ModelProto, name: str = "input_ids") -> bool:
    """Declare the token-id input int32 (its consumers, Reshape and Gather, take either); True when changed."""
    for inp in model.graph.input:
        if inp.name == name and inp.type.tensor_type.elem_type == TensorProto.INT64:
            inp.type.tensor_type.elem_type = TensorProto.INT32
            del model.graph.value_info[:]  # int64 types downstream are stale; shapes are written again at the end
            return True
    return False


def write_intermediate_shapes(model: onnx.ModelProto) -> int:
    """Write the inferred type and shape of every intermediate tensor into ``model.graph.value_info`` (in place).

    Compilers such as Qualcomm's QNN execution provider need a shape on every tensor, and onnx infers none after
    ``GroupNormalization``-21; the project's weight-free inference (GroupNorm standing in as Identity) supplies
    them. Returns the number of tensors left without a full static shape (0 when every one is known)."""
    from edgefusion.graph.shapes import infer_weight_free

    inferred = infer_weight_free(model)
    g = model.graph
    skip = {i.name for i in g.input} | {o.name for o in g.output} | {t.name for t in g.initializer}
    known = {v.name: v for v in inferred.graph.value_info if v.name not in skip}
    del g.value_info[:]
    missing = 0
    for name in (o for n in g.node for o in n.output if o and o not in skip):
        info = known.get(name)
        t = info.type.tensor_type if info is not None else None
        if t is None or not t.HasField("shape") or not all(d.HasField("dim_value") for d in t.shape.dim):
            missing += 1
        if info is not None:
            g.value_info.append(info)
    return missing


def apply_deploy_form(path: str | Path, component: str) -> dict:
    """Run the structural passes on the graph file at ``path`` (weights stay where they are); returns counts."""
    model = onnx.load(str(path), load_external_data=False)
    done = {"folded_constant_casts": fold_small_constant_casts(model)}
    if component == "text_encoder":
        done["int32_input_ids"] = int32_input_ids(model)
    onnx.save(model, str(path))
    return done


def write_shapes_file(path: str | Path) -> int:
    """:func:`write_intermediate_shapes` on a graph file (structure only); returns the tensors left unshaped."""
    model = onnx.load(str(path), load_external_data=False)
    missing = write_intermediate_shapes(model)
    onnx.save(model, str(path))
    return missing


def externalize_weights(path: str | Path) -> str:
    """Re-save the graph at ``path`` with every weight in ``<name>.data`` beside it (so a client graph can point at
    the same bytes); returns the data file's name."""
    path = Path(path)
    model = onnx.load(str(path))  # weights read from wherever they are now
    data = path.name + ".data"
    tmp = path.with_name(path.name + ".tmp")
    onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True, location=data,
                    size_threshold=1024)
    tmp.replace(path)
    return data
