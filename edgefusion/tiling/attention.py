"""Attention tiling (EdgeFusion's model-level tiling): split an attention into tiles of (head group x query block)
so each tile's ``QK^T -> softmax -> PV`` working set fits the on-chip SRAM.

A *site* is ``MatMul(q, k^T) -> [elementwise / QDQ / Cast chain] -> Softmax(last axis) -> [chain] -> MatMul(p, v)``.
Softmax runs along the key axis, so every query row is independent, and so is every head: splitting ``q`` along
its query axis (and ``q``, ``k^T`` and ``v`` along the head axis), running the whole chain per tile and
concatenating the results computes exactly the same values (QuantizeLinear scales are per tensor and shared, so
QDQ graphs tile the same way). Works on float, QDQ and weight-free skeleton graphs. Every node of tile ``n`` is
named ``<node>__t<n>`` and carries the metadata ``edgefusion.tile = n``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgefusion.graph.op_graph import TILE_KEY
from edgefusion.graph.shapes import tensor_shapes

CHAIN_OPS = {"QuantizeLinear", "DequantizeLinear", "Cast", "Mul", "Add", "Div", "Sub"}


@dataclass
class AttentionSite:
    """One tileable attention: its nodes (in order), the tensors it splits and the sizes that matter."""

    softmax: str  # node name (the site's id)
    nodes: list[str]
    query: str  # tensor split along ``axis`` (and the head axis)
    output: str  # the PV MatMul's output (concatenated back)
    axis: int  # query axis (negative, counted from the end)
    lq: int
    lk: int
    batch_heads: int
    key: str = ""  # k^T (the QK^T MatMul's second input), split along the head axis
    value: str = ""  # v (the PV MatMul's second input), split along the head axis
    heads: int = 1  # size of the head axis (-3) when the site can be split per head, else 1

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


def _constant_along(chain, shapes, const: set[str], axis: int) -> bool:
    """True when no constant input of the chain varies along ``axis`` (after broadcasting to the scores' rank)."""
    for node in chain:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Cast"):
            continue  # per-tensor scales and zero points
        for i in node.input:
            if i not in const:
                continue
            dims = shapes.get(i, (None, 0))[0]
            if dims is None or (len(dims) >= -axis and dims[axis] != 1):
                return False
    return True


def find_attention_sites(model: onnx.ModelProto) -> list[AttentionSite]:
    """Every tileable attention in ``model`` (sites whose chain constants vary per query, or of unknown shapes, are
    skipped; sites whose constants vary per head are tiled along queries only)."""
    g = model.graph
    shapes = tensor_shapes(model)
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
        if b.input[0] != p_tensor or not _constant_along(pre + post, shapes, const, -2):
            continue
        q, key, value = a.input[0], a.input[1], b.input[1]
        qshape, kshape, vshape, oshape = (shapes.get(t, (None, 0))[0] for t in (q, key, value, b.output[0]))
        if not qshape or not oshape or len(qshape) != len(shape) or any(d is None for d in qshape + oshape):
            continue
        lq, lk = shape[-2], shape[-1]
        if qshape[-2] != lq or oshape[-2] != lq:
            continue
        heads = 1
        if (len(shape) >= 3 and kshape and vshape and len(kshape) == len(vshape) == len(shape)
                and kshape[-3] == vshape[-3] == qshape[-3] == shape[-3] and _constant_along(pre + post, shapes, const, -3)):
            heads = int(shape[-3])
        nodes = [a, *reversed(pre), s, *post, b]
        sites.append(AttentionSite(softmax=s.name, nodes=[n.name for n in nodes], query=q, output=b.output[0],
                                   axis=-2, lq=int(lq), lk=int(lk), batch_heads=int(math.prod(shape[:-2])),
                                   key=key, value=value, heads=heads))
    return sites


def block_sizes(lq: int, block: int) -> list[int]:
    """Query rows per tile for a block size (the last tile takes the remainder)."""
    n = math.ceil(lq / block)
    return [block] * (n - 1) + [lq - block * (n - 1)]


def _split(g: onnx.GraphProto, source: str, sizes: list[int], axis: int, name: str) -> tuple[list[str], onnx.NodeProto]:
    sizes_name = f"{name}__sizes"
    g.initializer.append(numpy_helper.from_array(np.array(sizes, np.int64), sizes_name))
    outs = [f"{source}__{name}_{i}" for i in range(len(sizes))]
    return outs, helper.make_node("Split", [source, sizes_name], outs, axis=axis, name=name)


def _site_nodes(g, site: AttentionSite, region, heads_per_tile: int, block: int) -> list[onnx.NodeProto]:
    """The tiled replacement of one site's nodes."""
    out: list[onnx.NodeProto] = []
    groups = site.heads // heads_per_tile if 0 < heads_per_tile < site.heads else 1
    if groups > 1:
        heads = [heads_per_tile] * groups
        parts = {}
        for role, tensor in (("q", site.query), ("k", site.key), ("v", site.value)):
            parts[role], node = _split(g, tensor, heads, -3, f"{site.softmax}__tile_split_h{role}")
            out.append(node)
    else:
        parts = {"q": [site.query], "k": [site.key], "v": [site.value]}
    rows = block_sizes(site.lq, block)
    internal = {o for n in region for o in n.output}
    group_outs, tile = [], 0
    for j in range(groups):
        suffix = f"_g{j}" if groups > 1 else ""
        if len(rows) > 1:
            q_tiles, node = _split(g, parts["q"][j], rows, site.axis, f"{site.softmax}__tile_split{suffix}")
            out.append(node)
        else:
            q_tiles = [parts["q"][j]]
        tile_outs = []
        for q_tile in q_tiles:
            rename = {site.query: q_tile, site.key: parts["k"][j], site.value: parts["v"][j],
                      **{t: f"{t}__t{tile}" for t in internal}}
            for node in region:
                clone = onnx.NodeProto()
                clone.CopyFrom(node)
                clone.name = f"{node.name}__t{tile}"
                clone.input[:] = [rename.get(x, x) for x in node.input]
                clone.output[:] = [rename.get(x, x) for x in node.output]
                clone.metadata_props.add(key=TILE_KEY, value=str(tile))
                out.append(clone)
            tile_outs.append(f"{site.output}__t{tile}")
            tile += 1
        if len(tile_outs) > 1:
            target = site.output if groups == 1 else f"{site.output}__g{j}"
            out.append(helper.make_node("Concat", tile_outs, [target], axis=site.axis,
                                        name=f"{site.softmax}__tile_concat{suffix}"))
            group_outs.append(target)
        else:
            group_outs.append(tile_outs[0])
    if groups > 1:
        out.append(helper.make_node("Concat", group_outs, [site.output], axis=-3,
                                    name=f"{site.softmax}__tile_concat_h"))
    return out


def tile_attention(model: onnx.ModelProto, blocks: dict[str, int | tuple[int, int]]) -> onnx.ModelProto:
    """Rewrite the sites named in ``blocks`` into tiled form, in place. ``blocks`` maps a softmax node to its query
    rows per tile, or to (heads per tile, query rows per tile). Untiled choices are left alone. Returns ``model``."""
    sites = {s.softmax: s for s in find_attention_sites(model)}
    unknown = set(blocks) - set(sites)
    if unknown:
        raise ValueError(f"not tileable attention sites: {sorted(unknown)[:3]}")
    g = model.graph
    by_name = {n.name: n for n in g.node}
    new_nodes: dict[str, list[onnx.NodeProto]] = {}  # name of the site's last node -> replacement
    drop: set[str] = set()
    dropped_tensors: set[str] = set()
    for name, choice in blocks.items():
        site = sites[name]
        heads, block = choice if isinstance(choice, tuple) else (site.heads, choice)
        if heads > site.heads or (heads < site.heads and site.heads % heads):
            raise ValueError(f"site {name}: {heads} heads per tile do not divide its {site.heads} heads")
        if block >= site.lq and heads >= site.heads:
            continue
        region = [by_name[n] for n in site.nodes]
        new_nodes[region[-1].name] = _site_nodes(g, site, region, heads, min(block, site.lq))
        drop.update(site.nodes)
        dropped_tensors |= {o for n in region for o in n.output} - {site.output}
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
