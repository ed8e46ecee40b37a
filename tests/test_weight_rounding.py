"""GPTQ weight rounding (edgefusion.quant.gptq, .weight_rounding): it is round to nearest when the inputs are
uncorrelated, lowers the output error when they are not, reads a convolution's patches right, is applied only
behind 16-bit inputs (convolutions and linear layers), and lifts `tiny`'s W8A16 text encoder over the issue's
40 dB."""

from __future__ import annotations

import numpy as np
import pytest

from edgefusion.errors import EdgeFusionError
from edgefusion.metrics import mean_sqnr_db
from edgefusion.quant.emit import quantize_weight_per_channel
from edgefusion.quant.gptq import gptq_round
from edgefusion.quant.policy import load_policy
from edgefusion.quant.quantize_graph import quantize_graph
from edgefusion.runtime.session import open_session, run_session


def _output_error(x, w, q, scale):
    return float(np.sum((x @ (w - q.astype(np.float64) * scale)) ** 2))


def test_gptq_with_uncorrelated_inputs_is_round_to_nearest():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(48, 16)).astype(np.float32)
    q, scale = quantize_weight_per_channel(w, 1)
    assert np.array_equal(gptq_round(w, scale, np.eye(48) * 5.0), q)


def test_gptq_lowers_the_output_error_on_correlated_inputs():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 8)) @ rng.normal(size=(8, 64)) + 0.1 * rng.normal(size=(2000, 64))
    w = rng.normal(size=(64, 32)).astype(np.float32)
    q, scale = quantize_weight_per_channel(w, 1)
    g = gptq_round(w, scale, x.T @ x)
    assert g.dtype == np.int8 and np.abs(g.astype(int)).max() <= 127
    assert _output_error(x, w, g, scale) < 0.5 * _output_error(x, w, q, scale)
    # a weight stored [out, in] (Gemm transB=1) is rounded the same way
    assert np.array_equal(gptq_round(w.T.copy(), scale, x.T @ x, transposed=True), g.T)


def _im2col(x, kh, kw, pads, strides, dilations):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    cols = np.empty((c, kh, kw, n, oh, ow))
    for i in range(kh):
        for j in range(kw):
            r, q = i * dilations[0], j * dilations[1]
            cols[:, i, j] = xp[:, :, r:r + strides[0] * oh:strides[0], q:q + strides[1] * ow:strides[1]].transpose(
                1, 0, 2, 3)
    return cols.reshape(c * kh * kw, -1)


@pytest.mark.parametrize("pads,strides,dilations", [((1, 1, 1, 1), (1, 1), (1, 1)), ((1, 0, 1, 2), (2, 2), (1, 1)),
                                                    ((2, 2, 2, 2), (1, 2), (2, 1))])
def test_convolution_hessian_is_the_im2col_second_moment(tmp_path, pads, strides, dilations):
    """The in-graph patches (a depthwise convolution with one-hot kernels) are the convolution's im2col columns in
    the weight's [C, kh, kw] order, at its pads, strides and dilations, batch included."""
    import onnx
    from onnx import helper, numpy_helper

    from edgefusion.quant.weight_rounding import Patches, Target, collect_input_hessians

    rng = np.random.default_rng(2)
    w = rng.normal(size=(5, 3, 3, 2)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=list(pads), strides=list(strides),
                            dilations=list(dilations), name="conv")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3, 9, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    path = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    feeds = [{"x": rng.normal(size=(2, 3, 9, 8)).astype(np.float32)} for _ in range(3)]
    target = Target("w", "x", 3 * 3 * 2, True, Patches((3, 2), pads, strides, dilations))
    h = collect_input_hessians(path, [target], {"w": 3}, feeds)[target.key]
    want = sum(p @ p.T for p in (_im2col(f["x"].astype(np.float64), 3, 2, pads, strides, dilations) for f in feeds))
    np.testing.assert_allclose(h, want, rtol=1e-4, atol=1e-3)


def _te(tiny_float_graphs, tiny_calibration, tmp_path, policy, rounding):
    cal, ver = tiny_calibration
    qg = quantize_graph(tiny_float_graphs["text_encoder"], tmp_path / f"te-{policy}-{rounding}.onnx", "text_encoder",
                        load_policy(policy), [s.inputs for s in cal.samples["text_encoder"]],
                        groups=[s.prompt_index for s in cal.samples["text_encoder"]], weight_rounding=rounding)
    fs, qs = open_session(tiny_float_graphs["text_encoder"]), open_session(qg.path)
    samples = ver.samples["text_encoder"]
    return qg, mean_sqnr_db([run_session(fs, s.inputs)[0] for s in samples],
                            [run_session(qs, s.inputs)[0] for s in samples])


def test_gptq_lifts_the_tiny_w8a16_text_encoder_over_40_db(tiny_float_graphs, tiny_calibration, tmp_path):
    """The issue's text-encoder target on `tiny`, whose random Gaussian int8 weights rounded to nearest cost 37.8
    dB alone: the W8A16 text encoder on held-out prompts, to nearest vs GPTQ."""
    _, nearest = _te(tiny_float_graphs, tiny_calibration, tmp_path, "w8a16", "nearest")
    qg, gptq = _te(tiny_float_graphs, tiny_calibration, tmp_path, "w8a16", "gptq")
    assert qg.weight_rounding["method"] == "gptq" and qg.weight_rounding["layers"] == qg.weight_rounding["of"] > 0
    assert gptq >= 40.0 and gptq >= nearest + 2.0, (nearest, gptq)


def test_gptq_rounds_the_convolutions_behind_16bit_inputs(tiny_float_graphs, tiny_calibration, tmp_path):
    """The `tiny` w8a16 UNet (convolutions and linear layers behind 16-bit inputs; 40.2 -> 42.1 dB measured with
    `crossval` ranges on 4 + 2 prompts x 4 steps) gains on held-out prompts, and every one of them is rounded."""
    cal, ver = tiny_calibration
    fs = open_session(tiny_float_graphs["unet"])
    ref = [run_session(fs, s.inputs)[0] for s in ver.samples["unet"]]
    sqnr, qg = {}, None
    for rounding in ("nearest", "gptq"):
        qg = quantize_graph(tiny_float_graphs["unet"], tmp_path / f"unet-{rounding}.onnx", "unet", load_policy("w8a16"),
                            [s.inputs for s in cal.samples["unet"]],
                            groups=[s.prompt_index for s in cal.samples["unet"]], weight_rounding=rounding)
        qs = open_session(qg.path)
        sqnr[rounding] = mean_sqnr_db(ref, [run_session(qs, s.inputs)[0] for s in ver.samples["unet"]])
    convs = {layer.name for layer in qg.layers if layer.op_type == "Conv"}
    assert convs and qg.weight_rounding["layers"] == qg.weight_rounding["of"] > len(convs) // 2
    assert sqnr["gptq"] >= sqnr["nearest"] + 1.0, sqnr


def test_gptq_leaves_layers_behind_8bit_inputs_to_nearest(tiny_float_graphs, tiny_calibration, tmp_path):
    qg, _ = _te(tiny_float_graphs, tiny_calibration, tmp_path, "w8a8", "gptq")
    assert qg.weight_rounding == {"method": "gptq", "layers": 0, "of": 0, "samples": 0, "passes": 0}


def test_unknown_weight_rounding_is_one_line(tiny_float_graphs, tmp_path):
    with pytest.raises(EdgeFusionError, match="unknown weight rounding 'adaround'"):
        quantize_graph(tiny_float_graphs["text_encoder"], tmp_path / "x.onnx", "text_encoder", load_policy("w8a16"),
                       [], weight_rounding="adaround")


def test_unknown_weight_rounding_on_the_cli_is_one_line(tmp_path):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "edgefusion", "export", "--model", "tiny", "--weight-rounding",
                          "adaround", "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "adaround" in res.stderr and "gptq | nearest" in res.stderr and not (tmp_path / "x").exists()
