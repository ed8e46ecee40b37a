"""Sub-graph partitioning against brute force on small graphs: the fewest parts within the weight limit, and among
those the cuts that ship the fewest bytes."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from edgefusion.tiling.partition import plan_partition

MB = 2**20
ROWS = 4096  # activation rows: a uint8 tensor of width d ships 4096 x d bytes (0.125 MB per 32 columns)


def _chain(widths: list[int], skips: list[int]) -> onnx.ModelProto:
    """x -> per layer: MatMul(w_i) [+ h_(i - skip_i)] -> QuantizeLinear -> DequantizeLinear. Layers weigh
    differently (fp32 weights d_(i-1) x d_i) and skip connections make some cuts ship more than others."""
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.uint8), "z")]
    nodes, h, dims = [], "x", [64]
    for i, d in enumerate(widths):
        inits.append(numpy_helper.from_array(np.zeros((dims[-1], d), np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [h, f"w{i}"], [f"m{i}"], name=f"mm{i}"))
        src, j = f"m{i}", i - skips[i]
        if skips[i] and j >= 0 and widths[j] == d:
            nodes.append(helper.make_node("Add", [src, f"h{j}"], [f"a{i}"], name=f"skip{i}"))
            src = f"a{i}"
        nodes.append(helper.make_node("QuantizeLinear", [src, "s", "z"], [f"q{i}"], name=f"q{i}"))
        nodes.append(helper.make_node("DequantizeLinear", [f"q{i}", "s", "z"], [f"h{i}"], name=f"dq{i}"))
        h = f"h{i}"
        dims.append(d)
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [ROWS, 64])],
                              [helper.make_tensor_value_info(h, TensorProto.FLOAT, [ROWS, dims[-1]])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def _brute_force(model: onnx.ModelProto, limit_mb: float):
    """(fewest parts, least crossing MB with that many parts) over every set of cuts, from first principles: a cut
    before compute node c ships every quantized tensor made before c and read at or after c (a DequantizeLinear
    travels with its reader) and is allowed only if it ships nothing else; a part weighs the initializers its
    nodes read (shared ones once per part)."""
    g = model.graph
    init = {t.name: int(np.prod(t.dims)) * (1 if t.data_type == TensorProto.UINT8 else 4) for t in g.initializer}
    dq = {n.output[0]: n for n in g.node if n.op_type == "DequantizeLinear"}
    compute = [n for n in g.node if n.op_type != "DequantizeLinear"]
    made = {o: i for i, n in enumerate(compute) for o in n.output}

    def reads(n):  # initializers a node needs, with the DequantizeLinear of its inputs
        out = {i for i in n.input if i in init}
        for i in n.input:
            if i in dq:
                out |= {x for x in dq[i].input if x in init}
        return out

    def shipped(c):  # tensors crossing a cut before compute node c, and whether the cut is allowed
        cross = set()
        for i in range(c, len(compute)):
            for t in compute[i].input:
                t = dq[t].input[0] if t in dq else t
                if t in made and made[t] < c:
                    cross.add(t)
        return cross, all(compute[made[t]].op_type == "QuantizeLinear" for t in cross)

    cuts_ok = {c: shipped(c) for c in range(1, len(compute))}
    width = {t.name: t.dims[1] for t in g.initializer if t.name.startswith("w")}
    size = {f"q{name[1:]}": ROWS * d for name, d in width.items()}  # uint8 activations

    def weight(a, b):
        return sum(init[x] for x in set().union(*(reads(n) for n in compute[a:b])))

    for k in range(1, len(compute) + 1):
        best = None
        for cuts in itertools.combinations(range(1, len(compute)), k - 1):
            bounds = [0, *cuts, len(compute)]
            if any(weight(a, b) > limit_mb * MB for a, b in zip(bounds, bounds[1:])):
                continue
            if not all(cuts_ok[c][1] for c in cuts):
                continue
            cost = sum(size[t] for c in cuts for t in cuts_ok[c][0])
            best = cost if best is None else min(best, cost)
        if best is not None:
            return k, best / MB
    raise AssertionError("no partition fits")


@settings(max_examples=12, deadline=None)
@given(widths=st.lists(st.sampled_from([32, 64, 96]), min_size=4, max_size=7),
       skips=st.lists(st.sampled_from([0, 0, 1, 2, 3]), min_size=7, max_size=7),
       limit_kb=st.sampled_from([40, 56, 72]))
def test_fewest_parts_and_least_crossing_bytes_match_brute_force(widths, skips, limit_kb):
    model = _chain(widths, skips)
    limit = limit_kb / 1024
    if max(int(np.prod(t.dims)) * 4 for t in model.graph.initializer) > limit * MB:
        return  # one layer alone over the limit: refused (tested elsewhere)
    plan = plan_partition(model, limit, 8192)
    parts, crossing = _brute_force(model, limit)
    assert plan.parts == parts
    assert all(w <= limit for w in plan.weight_mb)
    assert sum(plan.crossing_mb) == pytest.approx(crossing, abs=1e-3 * max(1, parts))


def test_a_cut_avoids_a_skip_connection_when_it_can():
    """Six equal layers, a long skip from layer 0 to 3: two parts of at most four layers; a cut before layer 3
    would ship the skip too, after layer 3 or 4 it ships one tensor."""
    model = _chain([64] * 6, [0, 0, 0, 3, 0, 0])
    limit = 4 * 64 * 64 * 4 / MB + 1e-4  # four layers' weights per part
    plan = plan_partition(model, limit, 8192)
    parts, crossing = _brute_force(model, limit)
    assert plan.parts == parts == 2
    assert sum(plan.crossing_mb) == crossing == ROWS * 64 / MB
