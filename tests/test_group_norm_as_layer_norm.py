"""Integer GroupNorm layers are written as a layer norm plus a depthwise convolution, the form Qualcomm's HTP runs
as integer ops; integer norm/SiLU layers quantize every tensor inside them (edgefusion.quant.plan)."""

from collections import Counter

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgefusion.graph.group_norm_as_layer_norm import group_norms_as_layer_norms
from edgefusion.metrics import mean_sqnr_db
from edgefusion.quant.layers import find_layers
from edgefusion.quant.policy import load_policy
from edgefusion.quant.quantize_graph import quantize_graph
from edgefusion.runtime.session import open_session, run_session


def _group_norm_model(chans=8, groups=4, hw=5):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(1, 0.3, chans).astype(np.float32), "gamma"),
             numpy_helper.from_array(rng.normal(0, 0.3, chans).astype(np.float32), "beta")]
    node = helper.make_node("GroupNormalization", ["x", "gamma", "beta"], ["y"], num_groups=groups, epsilon=1e-5,
                            name="gn")
    node.metadata_props.add(key="pkg.torch.onnx.fx_node", value="%gn = call_function[target=torch.ops.aten."
                                                                 "group_norm.default]")
    node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'norm1', 'group_norm']")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, chans, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, chans, hw, hw])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_rewrite_computes_the_same_and_keeps_the_layer(tmp_path):
    model = _group_norm_model()
    x = {"x": np.random.default_rng(1).normal(0.5, 2.0, (1, 8, 5, 5)).astype(np.float32)}
    onnx.save(model, str(tmp_path / "gn.onnx"))
    before = run_session(open_session(tmp_path / "gn.onnx"), x)[0]
    layers_before = [(la.name, la.op_type) for la in find_layers(model, "c") if not la.passthrough]
    assert group_norms_as_layer_norms(model, {"other"}) == 0  # only the named nodes
    assert group_norms_as_layer_norms(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Reshape", "LayerNormalization", "Reshape", "Conv"]
    assert len(model.graph.node[1].input) == 2  # scale only: the HTP runs a quantized layer norm without bias
    conv = model.graph.node[-1]
    assert next(a.i for a in conv.attribute if a.name == "group") == 8
    assert {t.name for t in model.graph.initializer}.isdisjoint({"gamma", "beta"})  # the originals are dropped
    onnx.save(model, str(tmp_path / "ln.onnx"))
    after = run_session(open_session(tmp_path / "ln.onnx"), x)[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    assert [(la.name, la.op_type) for la in find_layers(model, "c") if not la.passthrough] == layers_before


def test_integer_group_norms_and_silu_are_quantized_inside(tiny_float_graphs, tiny_calibration, tmp_path):
    """w8a16 on the tiny UNet: no GroupNormalization left; each layer norm has a uint8 scale and an int32 bias, its
    output is quantized inside the layer, as is each SiLU's sigmoid; the graph stays close to float. ``default``
    (FP16 norms and SiLU) keeps its GroupNormalization nodes and no uint constants."""
    cal, ver = tiny_calibration
    feeds = [s.inputs for s in cal.samples["unet"]]
    fpath = tiny_float_graphs["unet"]
    float_model = onnx.load(str(fpath), load_external_data=False)
    n_gn = sum(n.op_type == "GroupNormalization" for n in float_model.graph.node)
    n_sig = sum(n.op_type == "Sigmoid" for n in float_model.graph.node)
    assert n_gn > 0 and n_sig > 0
    qg = quantize_graph(fpath, tmp_path / "w8a16.onnx", "unet", load_policy("w8a16"), feeds)
    model = onnx.load(str(qg.path), load_external_data=False)
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["GroupNormalization"] == 0 and ops["LayerNormalization"] >= n_gn
    assert not list(fpath.parent.glob(".*"))  # the rewritten float copy is removed
    inits = {t.name: t for t in model.graph.initializer}
    produced = {o: n for n in model.graph.node for o in n.output}
    for ln in (n for n in model.graph.node if n.op_type == "LayerNormalization"):
        scale = produced[ln.input[1]]
        bias = produced[ln.input[2]] if len(ln.input) > 2 else None  # the GroupNorm form has none
        assert inits[scale.input[0]].data_type == TensorProto.UINT8
        assert bias is None or inits[bias.input[0]].data_type == TensorProto.INT32
        readers = [n.op_type for n in model.graph.node if ln.output[0] in n.input]
        assert readers == ["QuantizeLinear"], readers  # quantized inside the layer
    for sig in (n for n in model.graph.node if n.op_type == "Sigmoid"):
        assert [n.op_type for n in model.graph.node if sig.output[0] in n.input] == ["QuantizeLinear"]
    assert qg.plan.const_bits and set(qg.plan.const_bits.values()) == {8}
    sess = open_session(qg.path)
    q_out = [run_session(sess, s.inputs)[0] for s in ver.samples["unet"]]
    f_sess = open_session(fpath)
    f_out = [run_session(f_sess, s.inputs)[0] for s in ver.samples["unet"]]
    assert mean_sqnr_db(f_out, q_out) > 30.0

    qd = quantize_graph(fpath, tmp_path / "default.onnx", "unet", load_policy("default"), feeds)
    ops = Counter(n.op_type for n in onnx.load(str(qd.path), load_external_data=False).graph.node)
    assert ops["GroupNormalization"] == n_gn and not qd.plan.const_bits
