"""Attention tiling (EdgeFusion's model-level tiling): split the queries into blocks so each block's
``QK^T -> softmax -> PV`` working set fits on-chip SRAM.

A *site* is ``MatMul(q, k^T) -> [elementwise / QDQ / Cast chain] -> Softmax(last axis) -> [chain] -> MatMul(p, v)``.
Softmax runs along the key axis, so every query row is independent: splitting ``q`` along its query axis, running
the whole chain per block and concatenating the results computes exactly the same values (QuantizeLinear scales are
per tensor and shared, so QDQ graphs tile the same way). Works on float, QDQ and weight-free skeleton graphs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgefusion.latency.op_graph import _shapes

CHAIN_OPS = {"QuantizeLinear", "DequantizeLinear", "Cast", "Mul", "Add", "Div", "Sub"}


@dataclass
class AttentionSite:
    """One tileable attention: its nodes (in order), the query tensor and the sizes that matter."""

    softmax: str  # node name (the site's id)
    nodes: list[str]
    query: str  # tensor split along ``axis``
    output: str  # the PV MatMul's output (concatenated back)
    axis: int  # query axis (negative, counted from the end)
    lq: int
    lk: int
    batch_heads: int

    def to_dict(self) -> dict:
        """Plain-dict form."""
        return asdict(self)


def _walk_back(tensor: str, consumers, producer, const: set[str]):
    """From a tensor back through single-use CHAIN_OPS; returns (chain nodes, first other node) or None."""
    chain = []
    while True:
        node = producer.get(tensor)
        if node is None or len(consumers.get(tensor, [])) != 1:
            return None
        if node.op_type not in CHAIN_OPS:
            return chain, node
        acts = [i for i in node.input if i and i not in const]
        if len(acts) != 1:
            return None
        chain.append(node)
        tensor = acts[0]


def _walk_forward(tensor: str, consumers, const: set[str]):
    """From a tensor forward through single-use CHAIN_OPS; returns (chain nodes, first other node) or None."""
    chain = []
    while True:
        cons = consumers.get(tensor, [])
        if len(cons) != 1:
            return None
        node = cons[0]
        if node.op_type not in CHAIN_OPS:
            return chain, node
        if any(i not in const for i in node.input if i and i != tensor):
            return None
        chain.append(node)
        tensor = node.output[0]


def find_attention_sites(model: onnx.ModelProto) -> list[AttentionSite]:
    """Every tileable attention in ``model`` (sites with masks that vary per query, or unknown shapes, are skipped)."""
    g = model.graph
    shapes = _shapes(model)
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            if i:
                consumers.setdefault(i, []).append(n)
    graph_inputs = {i.name for i in g.input}
    const = {t.name for t in g.initializer}
    for n in g.node:  # constant-only nodes (scales, zero points, reshaped weights)
        if all((i in const) for i in n.input if i) and not (set(n.input) & graph_inputs):
            const.update(n.output)
    sites = []
    for s in g.node:
        if s.op_type != "Softmax":
            continue
        axis = next((a.i for a in s.attribute if a.name == "axis"), -1)
        shape = shapes.get(s.input[0], (None, 0))[0]
        if not shape or any(d is None for d in shape) or len(shape) < 3 or axis not in (-1, len(shape) - 1):
            continue
        back = _walk_back(s.input[0], consumers, producer, const)
        fwd = _walk_forward(s.output[0], consumers, const)
        if back is None or fwd is None:
            continue
        pre, a = back
        post, b = fwd
        if a.op_type != "MatMul" or b.op_type != "MatMul":
            continue
        p_tensor = post[-1].output[0] if post else s.output[0]
        if b.input[0] != p_tensor:
            continue
        q = a.input[0]
        qshape = shapes.get(q, (None, 0))[0]
        oshape = shapes.get(b.output[0], (None, 0))[0]
        if not qshape or not oshape or len(qshape) != len(shape) or any(d is None for d in qshape + oshape):
            continue
        lq, lk = shape[-2], shape[-1]
        if qshape[-2] != lq or oshape[-2] != lq:
            continue
        nodes = [a, *reversed(pre), s, *post, b]
        sites.append(AttentionSite(softmax=s.name, nodes=[n.name for n in nodes], query=q, output=b.output[0],
                                   axis=-2, lq=int(lq), lk=int(lk), batch_heads=int(math.prod(shape[:-2]))))
    return sites


def block_sizes(lq: int, block: int) -> list[int]:
    """Query rows per tile for a block size (the last tile takes the remainder)."""
    n = math.ceil(lq / block)
    return [block] * (n - 1) + [lq - block * (n - 1)]


def tile_attention(model: onnx.ModelProto, blocks: dict[str, int]) -> onnx.ModelProto:
    """Rewrite the sites named in ``blocks`` (softmax node -> query rows per tile) into tiled form, in place.

    Sites whose block is >= their query length are left alone. Returns ``model``.
    """
    sites = {s.softmax: s for s in find_attention_sites(model)}
    unknown = set(blocks) - set(sites)
    if unknown:
        raise ValueError(f"not tileable attention sites: {sorted(unknown)[:3]}")
    g = model.graph
    by_name = {n.name: n for n in g.node}
    new_nodes: dict[str, list[onnx.NodeProto]] = {}  # name of the site's last node -> replacement
    drop: set[str] = set()
    dropped_tensors: set[str] = set()
    for name, block in blocks.items():
        site = sites[name]
        if block >= site.lq:
            continue
        sizes = block_sizes(site.lq, block)
        region = [by_name[n] for n in site.nodes]
        split_sizes = f"{site.softmax}__tile_sizes"
        g.initializer.append(numpy_helper.from_array(np.array(sizes, np.int64), split_sizes))
        q_tiles = [f"{site.query}__{site.softmax}__q{i}" for i in range(len(sizes))]
        out = [helper.make_node("Split", [site.query, split_sizes], q_tiles, axis=site.axis,
                                name=f"{site.softmax}__tile_split")]
        internal = {o for n in region for o in n.output}
        tile_outs = []
        for i, q_tile in enumerate(q_tiles):
            rename = {site.query: q_tile, **{t: f"{t}__t{i}" for t in internal}}
            for node in region:
                clone = onnx.NodeProto()
                clone.CopyFrom(node)
                clone.name = f"{node.name}__t{i}"
                clone.input[:] = [rename.get(x, x) for x in node.input]
                clone.output[:] = [rename.get(x, x) for x in node.output]
                out.append(clone)
            tile_outs.append(f"{site.output}__t{i}")
        out.append(helper.make_node("Concat", tile_outs, [site.output], axis=site.axis,
                                    name=f"{site.softmax}__tile_concat"))
        new_nodes[region[-1].name] = out
        drop.update(site.nodes)
        dropped_tensors |= internal - {site.output}
    if not new_nodes:
        return model
    rebuilt = []
    for node in g.node:
        if node.name in new_nodes:
            rebuilt.extend(new_nodes[node.name])
        elif node.name not in drop:
            rebuilt.append(node)
    del g.node[:]
    g.node.extend(rebuilt)
    keep = [vi for vi in g.value_info if vi.name not in dropped_tensors]
    del g.value_info[:]
    g.value_info.extend(keep)
    return model
