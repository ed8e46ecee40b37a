"""Write a ``GroupNormalization`` as a layer norm over each group, followed by the per-channel affine.

``GroupNormalization(x, gamma, beta)`` over ``G`` groups equals::

    Reshape(x, [N, G, -1]) -> LayerNormalization(axis=-1, scale=1, no bias) -> Reshape(back to x's shape)
        -> Conv(depthwise 1x1, weight gamma, bias beta)

(exactly, up to float summation order). Qualcomm's HTP runs that form as integer ops when its tensors are
quantized, while a quantized ``GroupNormalization`` stays a float island between a Dequantize and a Quantize
(measured with onnxruntime-qnn 2.7.0; README, "Qualcomm QNN"). The per-channel affine is a depthwise 1x1
convolution so that it quantizes as any convolution does: int8 per-channel weights (exact here, one value per
channel) and an int32 bias; an elementwise ``Mul``/``Add`` with quantized constants computed wrongly on the HTP
when the constant's range is far below the activation's. The quantizer applies the form to integer GroupNorm
layers only; FP16 ones keep the single op the HTP runs natively. The layer norm's scale (ones, one per element of
a group: stored as uint8 in an integer layer) is the form's only extra weight; the HTP rejected a scale of shape
``[1]``, and runs the norm without a bias.

Every new node carries the original node's metadata, so layer discovery keeps one layer with the original name.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgefusion.graph.naming import node_attr, unique_name
from edgefusion.graph.shapes import tensor_shapes


# the new nodes are named ``<GroupNorm node>__gn_<role>``
_ROLE_SUFFIX = re.compile(r"__gn_(group|norm|ungroup|affine)_*$")


def original_node_name(name: str) -> str:
    """The GroupNorm node a node written by :func:`group_norms_as_layer_norms` replaced (else ``name`` itself)."""
    return _ROLE_SUFFIX.sub("", name)


def group_norms_as_layer_norms(model: onnx.ModelProto, node_names: set[str] | None = None,
                               base_dir: str | Path | None = None, with_values: bool = True) -> int:
    """Rewrite, in place, the ``GroupNormalization`` nodes named in ``node_names`` (None: all) whose input shape is
    static; returns how many were rewritten. ``base_dir``: where the graph's external weights live (the new
    constants are stored inline). ``with_values=False``: a weight-free graph (a latency skeleton): the affine's
    constants get the right shapes and zero values."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    targets = [n for n in g.node if n.op_type == "GroupNormalization" and (node_names is None or n.name in node_names)
               and len(n.input) == 3 and n.input[1] in inits and n.input[2] in inits]
    if not targets:
        return 0
    shapes = tensor_shapes(model)
    used = {n.name for n in g.node} | {o for n in g.node for o in n.output} | set(inits) | {i.name for i in g.input}
    readers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    replace: dict[str, list[onnx.NodeProto]] = {}
    for node in targets:
        dims = (shapes.get(node.input[0]) or (None, 0))[0]
        groups = int(node_attr(node, "num_groups", 0))
        if not dims or any(d is None or d <= 0 for d in dims) or len(dims) < 3 or groups <= 0 or dims[1] % groups:
            continue
        chans, per_group = dims[1], dims[1] // groups * int(np.prod(dims[2:]))
        if with_values:
            base = str(base_dir) if base_dir else ""
            gamma = numpy_helper.to_array(inits[node.input[1]], base_dir=base).astype(np.float32)
            beta = numpy_helper.to_array(inits[node.input[2]], base_dir=base).astype(np.float32)
        else:
            gamma = np.zeros(list(inits[node.input[1]].dims), np.float32)
            beta = np.zeros(list(inits[node.input[2]].dims), np.float32)
        if gamma.shape != (chans,) or beta.shape != (chans,):
            continue
        kernel = [chans, 1] + [1] * (len(dims) - 2)
        names = {k: unique_name(f"{node.name}__{k}", used) for k in
                 ("grouped_shape", "shape", "ones", "gamma", "beta", "grouped", "normed", "ungrouped")}
        g.initializer.extend([
            numpy_helper.from_array(np.array([0, groups, -1], np.int64), names["grouped_shape"]),
            numpy_helper.from_array(np.array(dims, np.int64), names["shape"]),
            numpy_helper.from_array(np.ones(per_group, np.float32), names["ones"]),
            numpy_helper.from_array(gamma.reshape(kernel), names["gamma"]),
            numpy_helper.from_array(beta, names["beta"])])
        eps = float(node_attr(node, "epsilon", 1e-5))
        new = [helper.make_node("Reshape", [node.input[0], names["grouped_shape"]], [names["grouped"]],
                                name=unique_name(f"{node.name}__gn_group", used)),
               helper.make_node("LayerNormalization", [names["grouped"], names["ones"]],
                                [names["normed"]], axis=-1, epsilon=eps,
                                name=unique_name(f"{node.name}__gn_norm", used)),
               helper.make_node("Reshape", [names["normed"], names["shape"]], [names["ungrouped"]],
                                name=unique_name(f"{node.name}__gn_ungroup", used)),
               helper.make_node("Conv", [names["ungrouped"], names["gamma"], names["beta"]], [node.output[0]],
                                group=chans, kernel_shape=[1] * (len(dims) - 2),
                                name=unique_name(f"{node.name}__gn_affine", used))]
        for n in new:
            n.metadata_props.extend(node.metadata_props)
        replace[node.name] = new
        for x in node.input[1:]:
            readers[x] -= 1
    if not replace:
        return 0
    nodes = []
    for n in g.node:
        nodes.extend(replace.get(n.name, [n]))
    del g.node[:]
    g.node.extend(nodes)
    kept = [t for t in g.initializer if readers.get(t.name, 1) > 0]
    del g.initializer[:]
    g.initializer.extend(kept)
    return len(replace)

