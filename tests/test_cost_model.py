"""The emulated NPU cost model: hand-computed roofline figures, SRAM monotonicity, host fallback, the op graph."""

from __future__ import annotations

import random

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from edgefusion.graph.op_graph import Op, OpGraph, build_op_graph
from edgefusion.latency.cost_model import estimate_graph
from edgefusion.latency.device import DeviceProfile, load_device

MB = 2**20


def _round_device(sram_bytes: float = 1e6) -> DeviceProfile:
    """Round figures, so that every expected time below is hand arithmetic."""
    data = load_device("generic").to_dict()
    data.update(
        tensor_engine={"macs_per_cycle": 1000, "clock_mhz": 1000, "efficiency": 0.5},  # 5e11 MAC/s sustained
        vector_engine={"lanes": 100, "clock_mhz": 1000, "efficiency": 0.5},  # 5e10 op/s sustained
        memory={"sram_mb": sram_bytes / MB, "dram_gb_per_s": 10.0, "dram_efficiency": 0.5},  # 5e9 B/s sustained
        overheads={"per_node_us": 10.0, "per_tile_us": 2.0, "handoff_us": 3.0, "per_graph_us": 100.0},
        host={"gflops": 10.0, "gb_per_s": 5.0, "fallback_us": 1000.0, "ops": ["IsNaN", "Sin"]},
        throughput={"tensor_engine": {"W8A8": 1.0, "W8A16": 0.5, "FP16": 0.25},
                    "vector_engine": {"W8A8": 1.0, "W8A16": 1.0, "FP16": 1.0}})
    data["vector_ops_per_element"]["Softmax"] = 5
    return DeviceProfile.from_dict(data)


def _two_nodes(conv_precision="W8A8") -> OpGraph:
    """x (100 kB) -> Conv (1e9 MAC, 500 kB int8 weights) -> y (200 kB) -> Softmax (1e5 int16 elements) -> z."""
    conv = Op("conv", "Conv", "Conv", "tensor_engine", conv_precision, 10**9, 10**5, ["x"], ["y"], 500_000, "b")
    soft = Op("soft", "Softmax", "Softmax", "vector_engine", "W8A16", 0, 10**5, ["y"], ["z"], 0, "b")
    return OpGraph("unet", [conv, soft], {"x": 100_000, "y": 200_000, "z": 200_000}, ["x"], ["z"])


def test_two_node_graph_reproduces_the_hand_computed_roofline():
    # everything fits 1 MB: x is loaded once, y stays on chip, z (written over y in place) is written out
    cost = estimate_graph(_two_nodes(), _round_device(1e6))
    conv, soft = cost.kernels
    assert conv.compute_ms == pytest.approx(1e9 / 5e11 * 1e3)  # 2 ms on the tensor engine
    assert conv.dram_bytes == 500_000 + 100_000 and conv.dram_ms == pytest.approx(0.12)
    assert conv.ms == pytest.approx(2.0 + 0.010)  # compute-bound: the DMA hides under it, plus the launch
    assert soft.compute_ms == pytest.approx(10**5 * 5 / 5e10 * 1e3)  # 0.01 ms on the vector engine
    assert soft.dram_bytes == 200_000 and soft.ms == pytest.approx(0.04 + 0.010 + 0.003)  # + hand-off
    assert not conv.spilled and not soft.spilled
    assert cost.ms == pytest.approx(2.010 + 0.053 + 0.100)  # + one graph call
    assert cost.compute_bound_ms == pytest.approx(1.0)  # 1e9 MAC at the 1e12 MAC/s peak
    assert cost.dram_bound_ms == pytest.approx((500_000 + 100_000 + 200_000) / 1e10 * 1e3)
    # 150 kB of SRAM: x still fits, y does not: the conv writes y, the softmax reads it back
    small = estimate_graph(_two_nodes(), _round_device(150_000))
    conv, soft = small.kernels
    assert conv.dram_bytes == 500_000 + 100_000 + 200_000 and soft.dram_bytes == 400_000
    assert conv.spilled and soft.spilled
    assert small.ms == pytest.approx(2.010 + (0.08 + 0.013) + 0.100)
    # int16 activations halve the MAC rate
    w16 = estimate_graph(_two_nodes("W8A16"), _round_device(1e6))
    assert w16.kernels[0].compute_ms == pytest.approx(4.0)


def test_elementwise_tails_fuse_into_their_producer():
    conv = Op("conv", "Conv", "Conv", "tensor_engine", "W8A8", 10**9, 10**5, ["x"], ["y"], 0, "b")
    add = Op("add", "Add", "_elementwise", "vector_engine", "W8A8", 0, 10**5, ["y", "x"], ["z"], 0, "b", fusable=True)
    cost = estimate_graph(OpGraph("unet", [conv, add], {"x": 10**5, "y": 10**5, "z": 10**5}, ["x"], ["z"]),
                          _round_device())
    assert len(cost.kernels) == 1 and cost.kernels[0].ops == ["conv", "add"]
    assert cost.kernels[0].overhead_ms == pytest.approx(0.010)  # one launch, no hand-off


def test_fallback_operators_are_priced_on_the_host():
    dev = _round_device(1e7)
    ops = [Op("sin", "Sin", "_elementwise", "vector_engine", "W8A16", 0, 1000, ["t"], ["s"], 0, ""),  # graph input only
           Op("mm", "MatMul", "MatMul", "tensor_engine", "W8A8", 10**6, 1000, ["s"], ["a"], 0, ""),
           Op("nan", "IsNaN", "_elementwise", "vector_engine", "W8A16", 0, 1000, ["a"], ["m"], 0, ""),
           Op("mm2", "MatMul", "MatMul", "tensor_engine", "W8A8", 10**6, 1000, ["m"], ["o"], 0, ""),
           Op("exp", "Exp", "_elementwise", "vector_engine", "FP32", 0, 1000, ["o"], ["e"], 0, "")]  # FP32: host
    sizes = {"t": 4000, "s": 2000, "a": 2000, "m": 1000, "o": 2000, "e": 4000}
    cost = estimate_graph(OpGraph("text_encoder", ops, sizes, ["t"], ["e"]), dev)
    k = {kc.name: kc for kc in cost.kernels}
    assert [k[n].engine for n in ("sin", "mm", "nan", "mm2", "exp")] == \
        ["host", "tensor_engine", "host", "tensor_engine", "host"]
    # IsNaN: 1000 elements x 1 op at 10 GFLOP/s + (2000 + 1000) bytes at 5 GB/s, and one fallback (NPU stop/restart)
    assert k["nan"].compute_ms == pytest.approx((1000 / 10e9 + 3000 / 5e9) * 1e3)
    assert k["nan"].overhead_ms == pytest.approx(1.0) and cost.fallbacks == 1
    assert k["sin"].overhead_ms == 0  # depends on graph inputs only: done before the NPU starts
    assert k["exp"].overhead_ms == 0  # after the last NPU kernel: no restart
    assert cost.host_ms == pytest.approx(sum(k[n].compute_ms for n in ("sin", "nan", "exp")))
    assert k["mm"].dram_bytes == 2000 + 2000  # loads what the host made, writes what the host reads


def test_input_only_work_around_a_host_op_is_done_on_the_host():
    """The timestep sinusoid's float16-safe form: an angle Mul before Sin and the angle-sum Mul/Add after it depend
    on graph inputs only, so all of it runs on the host before the NPU starts (no NPU kernel, no fallback)."""
    ops = [Op("ang", "Mul", "_elementwise", "vector_engine", "W8A16", 0, 100, ["t"], ["a"], 0, "", fusable=True),
           Op("sin", "Sin", "_elementwise", "vector_engine", "W8A16", 0, 100, ["a"], ["s"], 0, ""),
           Op("sum", "Mul", "_elementwise", "vector_engine", "W8A16", 0, 100, ["s", "t"], ["u"], 0, "", fusable=True),
           Op("mm", "MatMul", "MatMul", "tensor_engine", "W8A8", 10**6, 1000, ["u"], ["o"], 0, "")]
    sizes = {"t": 400, "a": 400, "s": 400, "u": 400, "o": 2000}
    cost = estimate_graph(OpGraph("unet", ops, sizes, ["t"], ["o"]), _round_device(1e7))
    k = {kc.name: kc for kc in cost.kernels}
    assert [k[n].engine for n in ("ang", "sin", "sum", "mm")] == ["host", "host", "host", "tensor_engine"]
    assert cost.fallbacks == 0 and all(k[n].overhead_ms == 0 for n in ("ang", "sin", "sum"))


def _random_graph(rng: random.Random) -> OpGraph:
    ops, sizes, avail = [], {"x": rng.choice([1, 2, 4, 8]) * 2**18}, ["x"]
    for i in range(rng.randint(3, 24)):
        kind = rng.choice(["Conv", "Softmax", "Add", "Concat", "Split", "GroupNormalization", "IsNaN", "Mul"])
        ins = rng.sample(avail, min(len(avail), rng.choice([1, 1, 2])))
        out = f"t{i}"
        sizes[out] = rng.choice([1, 2, 3, 4, 6, 8, 12]) * 2**18
        if kind == "Conv":
            ops.append(Op(f"n{i}", kind, "Conv", "tensor_engine", "W8A16", rng.randint(1, 50) * 10**7, 0, ins[:1],
                          [out], rng.choice([0, 2**20, 2**22]), ""))
        elif kind == "Concat":
            sizes[out] = sum(sizes[t] for t in ins)
            ops.append(Op(f"n{i}", kind, "_view", "view", "W8A16", 0, 0, ins, [out], 0, ""))
        elif kind == "Split":
            outs = [out, f"t{i}b"]
            sizes[out] = sizes[f"t{i}b"] = sizes[ins[0]] // 2
            ops.append(Op(f"n{i}", kind, "_view", "view", "W8A16", 0, 0, ins[:1], outs, 0, ""))
            avail.append(f"t{i}b")
        else:
            cat = {"Softmax": "Softmax", "GroupNormalization": "GroupNorm"}.get(kind, "_elementwise")
            ops.append(Op(f"n{i}", kind, cat, "vector_engine", "W8A16", 0, sizes[out] // 2, ins, [out], 0, "",
                          fusable=kind in ("Add", "Mul")))
        avail.append(out)
    return OpGraph("unet", ops, sizes, ["x"], [avail[-1]])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), inputs_on_chip=st.booleans())
def test_more_sram_never_makes_a_random_graph_slower(seed, inputs_on_chip):
    graph = _random_graph(random.Random(seed))
    base = load_device("exynos2400")
    previous = None
    for mb in (0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 64):
        cost = estimate_graph(graph, base.with_figures({"memory.sram_mb": mb}), inputs_on_chip=inputs_on_chip)
        if previous is not None:
            assert cost.ms <= previous.ms + 1e-9, (seed, mb)
            assert cost.dram_bytes <= previous.dram_bytes
            assert all(k.dram_bytes <= p.dram_bytes for k, p in zip(cost.kernels, previous.kernels))
        assert cost.peak_sram_bytes <= mb * MB
        previous = cost


@pytest.fixture(scope="module")
def tiny_unet_view(tiny_float_graphs):
    from edgefusion.quant.layers import find_layers
    from edgefusion.quant.plan import plan_quantization
    from edgefusion.quant.policy import load_policy, resolve_policy

    model = onnx.load(str(tiny_float_graphs["unet"]), load_external_data=False)
    layers = find_layers(model, "unet")
    return model, plan_quantization(model, layers, resolve_policy(load_policy("default"), layers))


def test_more_sram_never_makes_the_tiny_unet_slower(tiny_unet_view):
    import copy

    from edgefusion.deploy.tiling import extend_plan, tile_for_device

    model, plan = tiny_unet_view
    small = load_device("exynos2400").with_figures({"memory.sram_mb": 0.1, "memory.dram_gb_per_s": 1.0})
    tiled, tiled_plan = copy.deepcopy(model), copy.deepcopy(plan)
    assert tile_for_device(tiled, "unet", small, tiled_plan)  # a tiled graph too
    extend_plan(tiled_plan, tiled)
    for graph in (build_op_graph(model, "unet", plan), build_op_graph(tiled, "unet", tiled_plan)):
        times = [estimate_graph(graph, small.with_figures({"memory.sram_mb": mb})).ms
                 for mb in (0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 6, 32)]
        assert all(b <= a + 1e-9 for a, b in zip(times, times[1:])), times
        assert times[0] > times[-1]  # and SRAM matters on it


def test_a_dequantized_int32_bias_counts_as_a_weight():
    """QDQ graphs may carry the bias of an integer Conv as DequantizeLinear(int32, input scale x weight scale)."""
    inits = [numpy_helper.from_array(np.ones((64, 4, 1, 1), np.int8), "w_q"),
             numpy_helper.from_array(np.arange(64, dtype=np.int32), "b_q"),
             numpy_helper.from_array(np.array(128, np.uint8), "x_z"),
             *(numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
               (("x_s", 0.1), ("w_s", 0.01), ("b_s", 0.001)))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["x_q"], name="q"),
             helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["x_dq"], name="dq"),
             helper.make_node("DequantizeLinear", ["w_q", "w_s"], ["w"], name="w_dq"),
             helper.make_node("DequantizeLinear", ["b_q", "b_s"], ["bias"], name="b_dq"),
             helper.make_node("Conv", ["x_dq", "w", "bias"], ["y"], name="conv")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 16, 16])], inits)
    og = build_op_graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), "unet")
    assert [op.op_type for op in og.ops] == ["Conv"]
    conv = og.ops[0]
    assert conv.inputs == ["x"] and conv.precision == "W8A8"  # the bias is a constant, not an activation
    assert conv.weight_bytes == 64 * 4 * 1 + 64 * 4  # int8 weights + int32 bias
    assert og.tensor_bytes["x"] == 4 * 16 * 16  # the input is stored as uint8
