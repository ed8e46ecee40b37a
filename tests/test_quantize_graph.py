"""QDQ emission on the tiny preset's graphs: node counts per op type and precision, and fidelity.

SQNR thresholds. The tiny preset has random weights, so absolute figures are only sanity floors, chosen well below
what the implementation measures (UNet, 8 verification samples: default ~23 dB, w8a8 ~23 dB, w8a16 ~38 dB,
fp16 ~56 dB) yet far above what a broken scale, zero point, axis or wiring gives (< 5 dB, usually negative):
8-bit uniform quantization of a Gaussian-like tensor alone bounds one tensor at ~40 dB and the ~200 quantized
tensors of the UNet compound to the low 20s; 16-bit activations should add ~15 dB; fp16 rounding ~30 dB more.
"""

from collections import Counter

import numpy as np
import onnx
import pytest

from edgefusion.metrics import mean_sqnr_db
from edgefusion.quant.policy import load_policy
from edgefusion.quant.quantize_graph import quantize_graph
from edgefusion.quant.storage import StorageNeeds
from edgefusion.runtime.session import open_session, run_session


def _quantize(tiny_float_graphs, tiny_calibration, tmp_path, comp, policy):
    cal, ver = tiny_calibration
    qg = quantize_graph(tiny_float_graphs[comp], tmp_path / f"{comp}-{policy}.onnx", comp, load_policy(policy),
                        (s.inputs for s in cal.samples[comp]))
    fs, qs = open_session(tiny_float_graphs[comp]), open_session(qg.path)
    ref = [run_session(fs, s.inputs)[0] for s in ver.samples[comp]]
    out = [run_session(qs, s.inputs)[0] for s in ver.samples[comp]]
    return qg, onnx.load(str(qg.path)), mean_sqnr_db(ref, out)


def _qdq_bits(model):
    """bit width -> number of QuantizeLinear nodes emitting that integer type (activations only)."""
    inits = {t.name: t for t in model.graph.initializer}
    bits = Counter()
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear":
            bits[{onnx.TensorProto.UINT8: 8, onnx.TensorProto.UINT16: 16}[inits[n.input[2]].data_type]] += 1
    return bits


def test_recipe_policy_qdq_layout_on_unet(tiny_float_graphs, tiny_calibration, tmp_path):
    """The EdgeFusion recipe by op type (`recipe`: `default` without its outermost-level rule)."""
    qg, model, sqnr = _quantize(tiny_float_graphs, tiny_calibration, tmp_path, "unet", "recipe")
    float_model = onnx.load(str(tiny_float_graphs["unet"]), load_external_data=False)
    n_softmax = sum(1 for n in float_model.graph.node if n.op_type == "Softmax")
    by_op = qg.qdq_by_op_type()
    # 16-bit QDQ exactly around each softmax: its input (the QK^T logits, widened from the MatMul's 8 bits by the
    # softmax consumer) and its output (probabilities, read at 16 bits by the next MatMul)
    assert by_op["Softmax"] == {"16": 2 * n_softmax}
    assert "16" not in by_op["MatMul"]
    # and the UNet's input latent with conv_in's output, 16-bit by the policy's conv_in rule
    assert by_op["Conv"]["16"] == 2
    assert _qdq_bits(model)[16] == 2 * n_softmax + 2
    # norms and swish are FP16: they own no QDQ, their outputs are rounded through fp16 instead
    for op in ("GroupNorm", "LayerNorm", "SiLU"):
        assert op not in by_op
    float_casts = [n for n in model.graph.node if n.op_type == "Cast"  # not the sinusoid's int32 table indices
                   and onnx.helper.get_attribute_value(n.attribute[0]) != onnx.TensorProto.INT32]
    assert len(float_casts) == 2 * len(qg.plan.fp16_tensors) + len(qg.plan.fp16_weights) > 0
    # every Conv/Gemm and weight MatMul has int8 per-channel weights
    n_weighted = sum(1 for n in float_model.graph.node if n.op_type in ("Conv", "Gemm") or
                     (n.op_type == "MatMul" and n.input[1] in {t.name for t in float_model.graph.initializer}))
    inits = {t.name: t for t in model.graph.initializer}
    const_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    weight_dq = [n for n in const_dq if inits[n.input[0]].data_type == onnx.TensorProto.INT8]
    assert len(weight_dq) == len(qg.plan.int8_weights) == n_weighted
    assert all(any(a.name == "axis" for a in n.attribute) for n in weight_dq)
    # every bias of an integer Conv/Gemm/Linear is int32 with scale = input scale x weight scale (zero point 0)
    bias_dq = [n for n in const_dq if inits[n.input[0]].data_type == onnx.TensorProto.INT32]
    n_biased = sum(1 for n in float_model.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2)
    assert len(bias_dq) == len(qg.plan.int32_biases) >= n_biased > 0
    # each int32 bias is read by its own layer only (tiny's all-zero biases are one shared constant in the
    # exporter's graph; a shared int32 bias would carry one layer's scale into every other reader)
    readers = Counter(i for n in model.graph.node for i in n.input)
    assert all(readers[n.output[0]] == 1 for n in bias_dq)
    counts = Counter(n.op_type for n in model.graph.node)
    # a split of a quantized tensor requantizes each part with the same quantizer (the QNN EP runs it as an integer
    # op only so): the GEGLU splits
    split_parts = sum(len(n.output) for n in float_model.graph.node
                      if n.op_type == "Split" and n.input[0] in qg.plan.act_bits)
    assert split_parts > 0
    assert counts["QuantizeLinear"] == len(qg.plan.act_bits) + split_parts
    assert counts["DequantizeLinear"] == (len(qg.plan.act_bits) + split_parts + len(qg.plan.int8_weights)
                                          + len(bias_dq))
    assert sqnr > 15.0


def test_precision_presets_order_on_unet(tiny_float_graphs, tiny_calibration, tmp_path):
    results = {p: _quantize(tiny_float_graphs, tiny_calibration, tmp_path, "unet", p) for p in
               ("default", "w8a8", "w8a16", "fp16")}
    sq = {p: r[2] for p, r in results.items()}
    assert _qdq_bits(results["w8a8"][1])[16] == 0
    assert _qdq_bits(results["w8a16"][1])[8] == 0
    fp16_counts = Counter(n.op_type for n in results["fp16"][1].graph.node)
    assert fp16_counts["QuantizeLinear"] == 0 and fp16_counts["Cast"] > 0
    assert sq["default"] > sq["w8a8"], sq
    assert sq["fp16"] > sq["w8a16"] + 5 > sq["w8a8"] + 5, sq
    assert sq["fp16"] > 45.0


@pytest.mark.parametrize("comp", ["text_encoder", "vae_decoder"])
def test_text_encoder_and_vae_stay_fp16_under_default(tiny_float_graphs, tiny_calibration, tmp_path, comp):
    qg, model, sqnr = _quantize(tiny_float_graphs, tiny_calibration, tmp_path, comp, "default")
    assert set(qg.resolved.precisions.values()) == {qg.resolved.precisions[next(iter(qg.resolved.precisions))]}
    assert next(iter(qg.resolved.precisions.values())).value == "FP16"
    assert Counter(n.op_type for n in model.graph.node)["QuantizeLinear"] == 0
    assert sqnr > 45.0


def test_fp16_rounding_is_not_optimised_away(tiny_float_graphs, tiny_calibration, tmp_path):
    """ORT would fold Cast(fp16)->Cast(fp32) pairs; the session must keep them, so fp16 error is visible."""
    _, _, sqnr = _quantize(tiny_float_graphs, tiny_calibration, tmp_path, "unet", "fp16")
    assert 45.0 < sqnr < 120.0


def _kernels(session_factory, path, out):
    session_factory(path, out)
    return Counter(n.op_type for n in onnx.load(str(out), load_external_data=False).graph.node)


def test_integer_kernels_under_the_project_session(tiny_float_graphs, tiny_calibration, tmp_path):
    """int32 biases (scale = input scale x weight scale) let onnxruntime fuse DQ -> Conv/Gemm -> Q into integer
    kernels under the project's own session options (which keep the fp16 Cast pairs and leave weights alone)."""
    qg, model, _ = _quantize(tiny_float_graphs, tiny_calibration, tmp_path, "unet", "w8a8")
    ops = _kernels(lambda p, o: open_session(p, optimized_model_path=o), qg.path, tmp_path / "opt.onnx")
    n_conv = Counter(n.op_type for n in model.graph.node)["Conv"]
    assert ops["QLinearConv"] == n_conv > 0  # every Conv, all of them W8A8 with int32 biases
    assert ops["QGemm"] > 0
    assert ops["Conv"] == 0


@pytest.mark.parametrize("policy", ["default", "w8a8"])
def test_sqnr_is_the_same_under_onnxruntimes_default_session(tiny_float_graphs, tiny_calibration, tmp_path, policy):
    """What a client (optimum, diffusers) computes with onnxruntime's default options is what the manifest says."""
    import onnxruntime as ort

    cal, ver = tiny_calibration
    qg, _, project_db = _quantize(tiny_float_graphs, tiny_calibration, tmp_path, "unet", policy)
    fs = open_session(tiny_float_graphs["unet"])
    plain = ort.InferenceSession(str(qg.path), providers=["CPUExecutionProvider"])
    ref = [run_session(fs, s.inputs)[0] for s in ver.samples["unet"]]
    out = [run_session(plain, s.inputs)[0] for s in ver.samples["unet"]]
    assert abs(mean_sqnr_db(ref, out) - project_db) < 0.1, (mean_sqnr_db(ref, out), project_db)


def test_unshare_biases_gives_each_reader_its_own_copy(tmp_path):
    """A Linear, a Gemm and a LayerNorm reading one bias constant: after unsharing each reads its own initializer and the
    graph computes the same thing."""
    from onnx import TensorProto, helper, numpy_helper

    from edgefusion.graph.unshare_biases import unshare_biases

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.full(4, 0.5, np.float32), "b"),
             numpy_helper.from_array(np.ones(4, np.float32), "g")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
             helper.make_node("Add", ["m1", "b"], ["a1"], name="add1"),
             helper.make_node("Gemm", ["a1", "w2", "b"], ["a2"], name="gemm"),
             helper.make_node("LayerNormalization", ["a2", "g", "b"], ["y"], name="ln")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    x = {"x": rng.standard_normal((2, 4)).astype(np.float32)}
    onnx.save(model, str(tmp_path / "shared.onnx"))
    before = run_session(open_session(tmp_path / "shared.onnx"), x)[0]
    # the quantizer leaves a shared bias float (its int32 form would carry one layer's scale into the others)
    from edgefusion.quant.graph_index import GraphIndex
    from edgefusion.quant.plan import layer_biases

    assert layer_biases(list(model.graph.node), GraphIndex.build(model)) == []
    assert unshare_biases(model) == 2
    # the Linear's, the Gemm's and the LayerNorm's (an integer norm's bias is int32 with its uint8 scale's scale)
    assert len(layer_biases(list(model.graph.node), GraphIndex.build(model))) == 3
    readers = Counter(i for n in model.graph.node for i in n.input if i.startswith("b"))
    assert len(readers) == 3 and set(readers.values()) == {1}
    onnx.save(model, str(tmp_path / "own.onnx"))
    np.testing.assert_array_equal(run_session(open_session(tmp_path / "own.onnx"), x)[0], before)
    assert unshare_biases(model) == 0


def test_per_tensor_matmul_weights_where_a_device_needs_them(tiny_float_graphs, tiny_calibration, tmp_path):
    """Per-tensor MatMul weights behind 16-bit inputs (snapdragon8gen3's ``weights`` section): MatMul weights with a 16-bit input get one scale
    and their int32 biases too; Conv stays per channel; an 8-bit input (``recipe``) keeps per-channel weights."""
    cal, ver = tiny_calibration
    feeds = [s.inputs for s in cal.samples["unet"]]
    fs = open_session(tiny_float_graphs["unet"])
    ref = [run_session(fs, s.inputs)[0] for s in ver.samples["unet"]]
    out = {}
    for name, policy, ops in (("pc", "w8a16", ()), ("pt", "w8a16", ("MatMul",)), ("d", "recipe", ("MatMul",))):
        qg = quantize_graph(tiny_float_graphs["unet"], tmp_path / f"{name}.onnx", "unet", load_policy(policy), feeds,
                            storage=StorageNeeds(per_tensor_16bit_input_weights=ops))
        qs = open_session(qg.path)
        out[name] = (qg, onnx.load(str(qg.path)), mean_sqnr_db(ref, [run_session(qs, s.inputs)[0]
                                                                    for s in ver.samples["unet"]]))
    qg, model, sqnr = out["pt"]
    inits = {t.name: t for t in model.graph.initializer}
    readers = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n.op_type)
    weight_dq = {n.output[0]: n for n in model.graph.node
                 if n.op_type == "DequantizeLinear" and n.output[0] in qg.plan.int8_weights}
    matmul = [n for t, n in weight_dq.items() if readers.get(t) == ["MatMul"]]
    conv = [n for t, n in weight_dq.items() if readers.get(t) == ["Conv"]]
    assert matmul and conv
    assert all(not n.attribute and list(inits[n.input[1]].dims) == [] for n in matmul)
    assert all(any(a.name == "axis" for a in n.attribute) for n in conv)
    assert qg.plan.summary()["int8_weights_per_tensor"] == len(matmul)
    per_tensor_w = {n.output[0] for n in matmul}
    biases = [b for b, (_, w) in qg.plan.int32_biases.items() if w in per_tensor_w]
    assert biases and all(list(inits[b + "_scale"].dims) == [] for b in biases)
    assert abs(sqnr - out["pc"][2]) < 3.0, (sqnr, out["pc"][2])  # one scale per weight costs little here
    assert out["d"][0].plan.summary()["int8_weights_per_tensor"] == 0  # 8-bit inputs: per channel as before


def test_int16_second_inputs_where_a_device_needs_them(tiny_float_graphs, tiny_calibration, tmp_path):
    """int16 second inputs of MatMul (snapdragon8gen3's ``activations`` section): a MatMul of two 16-bit activations (the text encoder's
    attention under ``w8a16``) reads its second input requantized to int16, symmetric over its source's range
    (the QNN execution provider turns a uint16 one into uint8); the first input and every other quantizer stay
    uint16, and the extra 16-bit rounding costs little."""
    cal, ver = tiny_calibration
    feeds = [s.inputs for s in cal.samples["text_encoder"]]
    fs = open_session(tiny_float_graphs["text_encoder"])
    ref = [run_session(fs, s.inputs)[0] for s in ver.samples["text_encoder"]]
    out = {}
    for name, ops in (("u", ()), ("s", ("MatMul",))):
        qg = quantize_graph(tiny_float_graphs["text_encoder"], tmp_path / f"{name}.onnx", "text_encoder",
                            load_policy("w8a16"), feeds, storage=StorageNeeds(signed_16bit_second_input=ops))
        qs = open_session(qg.path)
        out[name] = (qg, onnx.load(str(qg.path)),
                     mean_sqnr_db(ref, [run_session(qs, s.inputs)[0] for s in ver.samples["text_encoder"]]))
    assert out["u"][0].plan.signed_16bit_inputs == {}
    qg, model, sqnr = out["s"]
    signed = qg.plan.signed_16bit_inputs
    assert len(signed) == 2 * 2  # two layers: scores (q x k^T) and probabilities x values
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    int16 = [n for n in model.graph.node if n.op_type == "QuantizeLinear"
             and inits[n.input[2]].data_type == onnx.TensorProto.INT16]
    assert len(int16) == len(signed)
    for node in (n for n in model.graph.node if n.name in signed):
        dq = producer[node.input[1]]
        zp = onnx.numpy_helper.to_array(inits[dq.input[2]])
        assert dq.op_type == "DequantizeLinear" and zp.dtype == np.int16 and zp == 0
        lo, hi = qg.ranges[signed[node.name]]
        scale = float(onnx.numpy_helper.to_array(inits[dq.input[1]]))
        assert scale == pytest.approx(max(abs(lo), abs(hi)) / 32767, rel=1e-6)
        first = producer[node.input[0]]
        while first.op_type != "DequantizeLinear":  # through reshapes/transposes to its quantizer
            first = producer[first.input[0]]
        assert inits[first.input[2]].data_type == onnx.TensorProto.UINT16
    assert abs(sqnr - out["u"][2]) < 0.5, (sqnr, out["u"][2])


def _weighted_widths(model, qg):
    """Per integer weighted layer (Conv/Gemm/Linear with int8 weights): the activation widths it reads and writes,
    from the plan, following reads through reshapes/transposes up to the tensor whose QDQ the op reads."""
    from edgefusion.quant.graph_index import GraphIndex
    from edgefusion.quant.plan import WEIGHTED_LAYER_TYPES, quantized_source
    from edgefusion.quant.weight_handlers import weight_slots

    idx = GraphIndex.build(model)
    nodes = {n.name: n for n in model.graph.node}
    out = {}
    for layer in qg.layers:
        p = qg.resolved.precisions.get(layer.name)
        members = [nodes[n] for n in layer.nodes if n in nodes]
        if (p is None or not p.is_integer or layer.op_type not in WEIGHTED_LAYER_TYPES
                or not any(weight_slots(n, idx) for n in members)):
            continue
        produced = {o for n in members for o in n.output}
        widths = set()
        for n in members:
            for t in n.input:
                if t in idx.activations and t not in produced:
                    widths.add(qg.plan.act_bits.get(quantized_source(t, idx.producer, frozenset(qg.plan.act_bits))))
            for o in n.output:
                if o in qg.plan.act_bits and any(c.name not in layer.nodes for c in idx.consumers.get(o, [])):
                    widths.add(qg.plan.act_bits[o])
        out[layer.name] = widths
    return out


def test_weighted_layers_read_and_write_one_width(tiny_float_graphs, tiny_calibration, tmp_path):
    """A 16-bit block next to 8-bit layers (tests/policies/mixed_widths.yaml): the planner promotes the W8A8
    weighted layers that touch a 16-bit tensor (Qualcomm's HTP leaves a Conv/Gemm/Linear with mixed input and
    output widths on the CPU), the result lists them as W8A16, and the manifest's plan summary names them."""
    from pathlib import Path

    cal, _ = tiny_calibration
    policy = Path(__file__).parent / "policies" / "mixed_widths.yaml"
    feeds = [s.inputs for s in cal.samples["unet"]]
    qg = quantize_graph(tiny_float_graphs["unet"], tmp_path / "mixed.onnx", "unet", load_policy(str(policy)), feeds,
                        method="minmax")
    model = onnx.load(str(tiny_float_graphs["unet"]), load_external_data=False)
    widths = _weighted_widths(model, qg)
    assert widths and all(len(w) == 1 and None not in w for w in widths.values()), \
        {k: v for k, v in widths.items() if len(v) != 1 or None in v}
    promoted = qg.plan.promoted
    assert any("conv_shortcut" in n for n in promoted), promoted  # reads the 16-bit block's output
    assert all(qg.resolved.precisions[n].value == "W8A16" for n in promoted)
    assert qg.plan.summary()["promoted_layers"] == sorted(promoted)
    from edgefusion.quant.graph_index import GraphIndex
    from edgefusion.quant.plan import plan_quantization
    from edgefusion.quant.policy import resolve_policy

    from edgefusion.quant.layers import find_layers

    layers = find_layers(model, "unet")  # the float graph's (qg.layers are those of the graph it quantized)
    for preset in ("w8a8", "recipe", "default"):  # nothing to promote in the presets
        assert not plan_quantization(model, layers, resolve_policy(load_policy(preset), layers),
                                     GraphIndex.build(model)).promoted, preset


def test_integer_layers_behind_a_computed_reshape_get_int32_biases():
    """In the weight-free graphs the latency model plans (``build_skeletons``), a transformer's ``proj_out`` reads
    its input through a reshape whose shape is computed: a layer of its own (op type Concat), whose output is
    quantized because ``proj_out`` reads it. With that layer and the residual adds FP16 (as ``auto`` picked on the
    embedded model), the bias's input must be the reshape's output: it was looked up past it, at the add, which is
    not quantized there, so the bias stayed float."""
    from edgefusion.latency.skeleton import build_skeletons
    from edgefusion.models.source import resolve_model_source
    from edgefusion.quant.graph_index import GraphIndex
    from edgefusion.quant.layers import find_layers
    from edgefusion.quant.plan import plan_quantization
    from edgefusion.quant.policy import PolicySpec, resolve_policy
    from edgefusion.quant.precision import Precision
    from edgefusion.quant.weight_handlers import bias_slot

    model = build_skeletons(resolve_model_source("tiny"), components=("unet",))["unet"]
    spec = PolicySpec("adds_fp16", [("op:Add", Precision.FP16), ("op:Concat", Precision.FP16),
                                    ("re:^unet/time_proj/", Precision.FP32), ("_default", Precision.W8A8)])
    layers = find_layers(model, "unet")
    idx = GraphIndex.build(model)
    plan = plan_quantization(model, layers, resolve_policy(spec, layers), idx)
    nodes = {n.name: n for n in model.graph.node}
    proj = [nodes[n] for la in layers if "proj_out" in la.name for n in la.nodes if nodes[n].op_type == "Conv"]
    assert proj
    behind_reshape = 0
    for node in proj:
        bias = node.input[bias_slot(node, idx)]
        assert bias in plan.int32_biases, bias
        source = plan.int32_biases[bias][0]
        assert source in plan.act_bits
        behind_reshape += idx.producer[source].op_type == "Reshape"
    assert behind_reshape  # the case this test is about is present in the graph


def test_default_names_the_layers_the_planner_would_promote(tiny_float_graphs):
    """``default``'s shortcut and time-projection rules name layers the one-width rule promotes anyway: on an
    exported graph the plan is the same without them (they keep the file, and the latency model's weight-free
    graphs, saying what runs at 16 bits), and with them nothing is left to promote."""
    from edgefusion.quant.graph_index import GraphIndex
    from edgefusion.quant.layers import find_layers
    from edgefusion.quant.plan import plan_quantization
    from edgefusion.quant.policy import PolicySpec, resolve_policy

    model = onnx.load(str(tiny_float_graphs["unet"]), load_external_data=False)
    layers, idx = find_layers(model, "unet"), GraphIndex.build(model)
    spec = load_policy("default")
    trimmed = PolicySpec("trimmed", [(k, p) for k, p in spec.rules
                                     if "conv_shortcut" not in k and "time_emb_proj" not in k], spec.description)
    assert len(trimmed.rules) == len(spec.rules) - 2
    full = plan_quantization(model, layers, resolve_policy(spec, layers), idx)
    res = resolve_policy(trimmed, layers)
    plan = plan_quantization(model, layers, res, idx)
    assert not full.promoted and plan.promoted
    assert plan.act_bits == full.act_bits and plan.int32_biases == full.int32_biases
    assert {**res.precisions, **plan.promoted} == resolve_policy(spec, layers).precisions


@pytest.mark.parametrize("comp", ["text_encoder", "unet"])
def test_both_sessions_compute_what_the_qdq_graph_defines(tiny_float_graphs, tiny_calibration, tmp_path, comp):
    """onnxruntime's fused kernels may round differently, never at another precision. Under its default accuracy
    level the MatMulNBits it builds from DQ(int8 weight) -> MatMul quantizes a W8A16 layer's 16-bit input to 8 bits
    (the tiny text encoder at w8a16 read 39.0 dB against its own unoptimized QDQ graph, the UNet 53.0 dB, under both
    the project's session and onnxruntime's defaults). The project session computes that MatMul in fp32, and the
    graph writes those weights' axis as -1, which the fusion does not take, so a client opening the folder with
    onnxruntime's defaults (optimum, diffusers) computes it too: both within 70 dB of the unoptimized graph."""
    import onnxruntime as ort

    cal, ver = tiny_calibration
    qg = quantize_graph(tiny_float_graphs[comp], tmp_path / f"{comp}.onnx", comp, load_policy("w8a16"),
                        (s.inputs for s in cal.samples[comp]))
    wide = [n for n in onnx.load(str(qg.path), load_external_data=False).graph.node
            if n.op_type == "DequantizeLinear" and any(a.name == "axis" and a.i == -1 for a in n.attribute)]
    assert wide  # every MatMul of a w8a16 graph reads a 16-bit tensor
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    defined = ort.InferenceSession(str(qg.path), plain, providers=["CPUExecutionProvider"])
    ref = [run_session(defined, s.inputs)[0] for s in ver.samples[comp]]
    for session in (open_session(qg.path), open_session(qg.path, ort_defaults=True)):
        out = [run_session(session, s.inputs)[0] for s in ver.samples[comp]]
        assert mean_sqnr_db(ref, out) > 70, mean_sqnr_db(ref, out)
