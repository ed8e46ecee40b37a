"""Sub-graph partitioning: split a graph that exceeds a device's per-graph limits into the fewest parts that fit,
cutting where the fewest bytes cross.

Nodes keep the graph's (topological, execution) order and each part is a contiguous run of it, so a cut at position
``i`` ships every tensor produced before ``i`` and read at or after ``i`` (UNet skip connections make some cuts much
dearer than others). Per part: weights = bytes of the initializers it reads (shared ones count in every part that
reads them), memory = weights + the largest activation working set (inputs + outputs) of one node. The fewest parts
come from a greedy furthest reach; among partitions with that many parts, a sliding-window dynamic programme picks
the cuts with the least crossing bytes.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx
from onnx import helper

from edgefusion.errors import EdgeFusionError
from edgefusion.graph.shapes import ELEM_KIND, KIND_BYTES, tensor_shapes

MB = 2**20
LAYOUT_OPS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity"}


@dataclass
class PartitionPlan:
    """Where to cut and what each part holds."""

    cuts: list[int]  # node positions where parts 1.. start
    weight_mb: list[float]
    memory_mb: list[float]
    crossing_mb: list[float]  # bytes shipped at each cut
    limit_weight_mb: float
    limit_memory_mb: float

    @property
    def parts(self) -> int:
        """Number of sub-graphs."""
        return len(self.cuts) + 1

    def to_dict(self) -> dict:
        """Plain-dict form."""
        return asdict(self)


def _split_constants(g: onnx.GraphProto):
    """(compute nodes in order, nodes that travel with their consumers by output, initializers each tensor derives
    from). Travelling nodes: constant-only ones (weight DequantizeLinear / Cast), the DequantizeLinear of
    activations and layout ops after them, so a cut ships the int8/int16 tensor and every DQ stays next to the op
    a runtime fuses it into."""
    inits = {t.name for t in g.initializer}
    graph_inputs = {i.name for i in g.input} - inits
    src: dict[str, frozenset[str]] = {t: frozenset([t]) for t in inits}
    const_nodes: dict[str, onnx.NodeProto] = {}
    compute = []
    for nd in g.node:
        ins = [i for i in nd.input if i]
        if all(i in src for i in ins) and not (set(ins) & graph_inputs):
            derived = frozenset().union(*(src[i] for i in ins)) if ins else frozenset()
            for o in nd.output:
                src[o] = derived
                const_nodes[o] = nd
        elif nd.op_type == "DequantizeLinear" or (nd.op_type in LAYOUT_OPS and nd.input[0] in const_nodes):
            for o in nd.output:
                const_nodes[o] = nd
        else:
            compute.append(nd)
    return compute, const_nodes, src


def _initializers_read(nd: onnx.NodeProto, travelling: dict, src: dict) -> frozenset[str]:
    """The initializers a part holding ``nd`` needs: those its inputs derive from, and the scales and zero points
    of the activation DequantizeLinear (and layout) nodes that travel with it."""
    out: set[str] = set()
    for t in nd.input:
        if t in src:
            out |= src[t]
            continue
        walk = travelling.get(t)
        while walk is not None and t not in src:
            out.update(*(src[x] for x in walk.input[1:] if x in src))
            t = walk.input[0]
            out |= src.get(t, frozenset())
            walk = travelling.get(t)
    return frozenset(out)


def _through_dq(t: str, travelling: dict) -> str:
    """The tensor a cut really ships for ``t``: the quantized input of an activation DequantizeLinear."""
    nd = travelling.get(t)
    while nd is not None and (nd.op_type == "DequantizeLinear" or nd.op_type in LAYOUT_OPS):
        t = nd.input[0]
        nd = travelling.get(t)
    return t


def _sizes(model: onnx.ModelProto):
    shapes = tensor_shapes(model)

    def nbytes(t: str) -> int:
        dims, elem = shapes.get(t, (None, 1))
        if dims is None or any(d is None for d in dims):
            return 0
        return math.prod(dims) * KIND_BYTES.get(ELEM_KIND.get(elem, "fp32"), 4)
    return shapes, nbytes


def plan_partition(model: onnx.ModelProto, max_weight_mb: float, max_memory_mb: float) -> PartitionPlan:
    """The fewest parts within both limits, with the least bytes crossing the cuts."""
    g = model.graph
    nodes, travelling, src = _split_constants(g)  # weight DQ / casts and activation DQ travel with consumers
    n = len(nodes)
    _, nbytes = _sizes(model)
    init_bytes = {t.name: math.prod(t.dims) * KIND_BYTES.get(ELEM_KIND.get(t.data_type, "fp32"), 4)
                  for t in g.initializer}
    node_inits = [_initializers_read(nd, travelling, src) for nd in nodes]
    node_w = [sum(init_bytes[i] for i in ws) for ws in node_inits]
    node_ws = [sum(nbytes(t) for t in list(nd.input) + list(nd.output) if t and t not in src) for nd in nodes]
    wl, ml = max_weight_mb * MB, max_memory_mb * MB
    for i, nd in enumerate(nodes):
        if node_w[i] > wl or node_w[i] + node_ws[i] > ml:
            need_w = node_w[i] / MB
            need_m = (node_w[i] + node_ws[i]) / MB
            raise EdgeFusionError(
                f"operator '{nd.name or nd.op_type}' alone needs {need_w:.1f} MB of weights and {need_m:.1f} MB of "
                f"memory, over the per-graph limits ({max_weight_mb:g} MB weights, {max_memory_mb:g} MB memory)",
                f"raise the limits to at least {need_w * 1.01:.2f} MB weights and {need_m * 1.01:.2f} MB memory")
    # crossing bytes at each position: produced before i, read at or after i
    produced_at = {o: i for i, nd in enumerate(nodes) for o in nd.output}
    last_use: dict[str, int] = {}
    for i, nd in enumerate(nodes):
        for t in nd.input:
            t = _through_dq(t, travelling)
            if t in produced_at:
                last_use[t] = i
    delta = [0] * (n + 2)
    for t, p in produced_at.items():  # a cut before node i ships t when p < i <= its last use
        end = last_use.get(t, p)
        if end > p:
            delta[p + 1] += nbytes(t)
            delta[end + 1] -= nbytes(t)
    cross = [0] * (n + 1)
    run = 0
    for i in range(n + 1):
        run += delta[i]
        cross[i] = run
    # cut only at layer boundaries, where every crossing tensor is a quantized (QuantizeLinear) or fp16-rounded
    # (Cast) one: inside a layer runtimes fuse DQ -> op -> Q into integer kernels (and MatMul + Add, Conv + Add),
    # and a cut there would change the arithmetic, and the result
    bad = [0] * (n + 2)
    for t, p in produced_at.items():
        end = last_use.get(t, p)
        if end > p and nodes[p].op_type not in ("QuantizeLinear", "Cast"):
            bad[p + 1] += 1
            bad[end + 1] -= 1
    run = 0
    for i in range(n + 1):
        run += bad[i]
        if run:
            cross[i] += 1 << 50  # allowed only when no other cut exists

    # reach[j]: the largest i such that nodes [j, i) fit one part (shared initializers counted once per part)
    def fits_from(j: int) -> int:
        seen: set[str] = set()
        w, peak = 0, 0
        i = j
        while i < n:
            add = sum(init_bytes[x] for x in node_inits[i] if x not in seen)
            if w + add > wl or w + add + max(peak, node_ws[i]) > ml:
                break
            seen.update(node_inits[i])
            w += add
            peak = max(peak, node_ws[i])
            i += 1
        return i

    reach = [fits_from(j) for j in range(n)] if (sum(init_bytes.values()) > wl or
                                                 sum(init_bytes.values()) + max(node_ws, default=0) > ml) else None
    if reach is None:
        return PartitionPlan([], [round(sum(node_w) / MB, 3)], [], [], max_weight_mb, max_memory_mb)
    # fewest parts (greedy furthest reach)
    k, pos = 0, 0
    while pos < n:
        pos = reach[pos]
        k += 1
    # least crossing bytes with k parts: f[p][i] = min cost with p parts covering [0, i), i a cut position
    inf = float("inf")
    f = [0.0 if i == 0 else inf for i in range(n + 1)]
    back: list[list[int]] = []
    for _ in range(k):
        g_new = [inf] * (n + 1)
        arg = [-1] * (n + 1)
        window: deque[int] = deque()  # candidate starts j, f[j] increasing
        j = 0
        for i in range(1, n + 1):
            while j < i:  # starts j < i become candidates once considered
                if f[j] < inf:
                    while window and f[window[-1]] >= f[j]:
                        window.pop()
                    window.append(j)
                j += 1
            while window and reach[window[0]] < i:  # start cannot reach i
                window.popleft()
            if window:
                best = window[0]
                g_new[i] = f[best] + (cross[i] if i < n else 0)
                arg[i] = best
        back.append(arg)
        f = g_new
    if f[n] == inf:  # the sliding window drops starts whose reach is short; fall back to greedy cuts
        cuts, pos = [], 0
        while True:
            pos = reach[pos]
            if pos >= n:
                break
            cuts.append(pos)
    else:
        cuts, i = [], n
        for arg in reversed(back):
            i = arg[i]
            if i > 0:
                cuts.append(i)
        cuts.sort()
    bounds = [0, *cuts, n]
    weight_mb, memory_mb = [], []
    for a, b in zip(bounds, bounds[1:]):
        used = set().union(*node_inits[a:b])
        w = sum(init_bytes[x] for x in used)
        weight_mb.append(round(w / MB, 3))
        memory_mb.append(round((w + max(node_ws[a:b])) / MB, 3))
    return PartitionPlan(cuts, weight_mb, memory_mb, [round((cross[c] % (1 << 50)) / MB, 3) for c in cuts],
                         max_weight_mb,
                         max_memory_mb)


def _with_constants(part: list, const_nodes: dict, also: list[str] = ()) -> list:
    """The part's nodes with the travelling nodes they (and the tensors in ``also``) need, in dependency order."""
    head, seen = [], set()

    def need(t: str) -> None:
        nd = const_nodes.get(t)
        if nd is None or id(nd) in seen:
            return
        seen.add(id(nd))
        for i in nd.input:
            need(i)
        head.append(nd)
    for nd in part:
        for i in nd.input:
            need(i)
    tail_start = len(head)
    for t in also:
        need(t)
    return head[:tail_start] + part + head[tail_start:]


def write_partitions(model_path: Path, plan: PartitionPlan, out_dir: Path, stem: str = "part") -> list[Path]:
    """Write one ONNX file per part (weights loaded from ``model_path``'s external data); returns the paths."""
    model = onnx.load(str(model_path))
    g = model.graph
    shapes, _ = _sizes(model)
    inits = {t.name: t for t in g.initializer}
    nodes, const_nodes, _ = _split_constants(g)
    bounds = [0, *plan.cuts, len(nodes)]
    graph_outputs = [o.name for o in g.output]
    consumers_after: dict[str, int] = {}
    for i, nd in enumerate(nodes):
        for t in nd.input:
            consumers_after[t] = i
            consumers_after[_through_dq(t, const_nodes)] = i
    paths = []
    for p, (a, b) in enumerate(zip(bounds, bounds[1:])):
        last = p == len(bounds) - 2
        part_nodes = _with_constants(nodes[a:b], const_nodes, graph_outputs if last else ())
        produced = {o for nd in part_nodes for o in nd.output}
        needed = list(dict.fromkeys(t for nd in part_nodes for t in nd.input if t))
        ins = [t for t in needed if t not in produced and t not in inits]
        outs = [t for t in dict.fromkeys(o for nd in nodes[a:b] for o in nd.output)
                if t in graph_outputs or consumers_after.get(t, -1) >= b]
        if last:
            outs = list(dict.fromkeys(outs + graph_outputs))

        def vi(t: str):
            dims, elem = shapes.get(t, (None, onnx.TensorProto.FLOAT))
            return helper.make_tensor_value_info(t, elem, dims)
        part = helper.make_graph(part_nodes, f"{g.name}_{stem}{p}", [vi(t) for t in ins], [vi(t) for t in outs],
                                 [inits[t] for t in needed if t in inits])
        pm = helper.make_model(part, opset_imports=model.opset_import, ir_version=model.ir_version)
        pm.functions.extend(model.functions)
        path = out_dir / f"{stem}{p}.onnx"
        big = sum(t.ByteSize() for t in part.initializer) > 2**30
        onnx.save(pm, str(path), save_as_external_data=big, location=f"{stem}{p}.onnx.data" if big else None)
        paths.append(path)
    return paths
