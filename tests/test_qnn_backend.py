"""Qualcomm QNN HTP backend (edgefusion[qnn]): every exported graph compiles for HTP v75 with CPU fallback disabled,
context binaries are written, the emulated HTP's outputs are compared with onnxruntime's CPU run.

Needs onnxruntime-qnn; skipped with the reason elsewhere, and failing instead when EDGEFUSION_REQUIRE_QNN=1 (CI)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgefusion.latency.backends import discover_backends, select_backend
from edgefusion.latency.device import load_device

QNN = discover_backends()["qnn"]()
WHY = QNN.unavailable_reason()
if WHY and os.environ.get("EDGEFUSION_REQUIRE_QNN") == "1":
    raise RuntimeError(f"EDGEFUSION_REQUIRE_QNN=1 but the QNN backend cannot run: {WHY}")
needs_qnn = pytest.mark.skipif(WHY is not None, reason=f"QNN backend unavailable: {WHY}")
POLICIES = ("default", "w8a16", "fp16", "mixed_widths")
# a 16-bit block beside 8-bit layers: compiles only because the planner promotes the weighted layers on its edges
SPECS = {"mixed_widths": str(Path(__file__).parent / "policies" / "mixed_widths.yaml")}
FP16_UNET_NORMS = ("default", "mixed_widths")  # policies whose UNet keeps FP16 norms and SiLU between integer layers


def test_backend_is_a_plugin_that_measures_no_latency():
    """Registered through the entry point group; `auto` latency never picks it; asking it for latency is refused."""
    from edgefusion.errors import EdgeFusionError

    assert QNN.name == "qnn" and "snapdragon8gen3" in QNN.devices
    backend, notes = select_backend("auto", load_device("snapdragon8gen3"))
    assert backend.name == "emulated" and any("measures no latency" in n for n in notes)
    with pytest.raises(EdgeFusionError, match="measures no latency"):
        QNN.estimate(None, "unet", load_device("snapdragon8gen3"))


def test_backend_choice_is_checked_before_work():
    from edgefusion.errors import EdgeFusionError
    from edgefusion.export.qnn_stage import qnn_requested

    assert qnn_requested("auto", "exynos2400") == (False, None)
    assert qnn_requested("emulated", "snapdragon8gen3") == (False, None)
    with pytest.raises(EdgeFusionError, match="Qualcomm device"):
        qnn_requested("qnn", "exynos2400")


@pytest.fixture(scope="module")
def qnn_exports(tmp_path_factory) -> dict[str, Path]:
    """The tiny preset exported for snapdragon8gen3 with the QNN step, under each target policy (and a mixed-width
    test policy, whose manifest must list the promoted layers)."""
    from edgefusion.export.run_export import export

    root = tmp_path_factory.mktemp("qnn")
    for policy in POLICIES:
        export(model="tiny", mpq_policy=SPECS.get(policy, policy), device="snapdragon8gen3", backend="qnn",
               out=root / policy, calib_prompts=2, calib_steps=2, verify_prompts=1, htp_samples=1, progress=False)
    return {p: root / p for p in POLICIES}


@needs_qnn
@pytest.mark.parametrize("policy", POLICIES)
def test_every_graph_compiles_for_htp_v75(qnn_exports, policy):
    d = qnn_exports[policy]
    manifest = json.loads((d / "manifest.json").read_text())
    q = manifest["qnn"]
    assert q["provider_options"]["soc_model"] == "57" and q["provider_options"]["htp_arch"] == "75"
    assert (q["graphs_compiled"], q["graphs_total"], q["cpu_nodes"]) == (3, 3, 0), q
    promoted = manifest["components"]["unet"]["plan"]["promoted_layers"]
    assert bool(promoted) == (policy == "mixed_widths"), promoted  # default names its edge layers itself
    for comp, rec in q["components"].items():
        for g in rec["graphs"]:
            assert g["compiled"] and g["cpu_nodes"] == 0 and g["blocking_op_types"] == {}
            assert any(f.endswith("_qnn.bin") for f in g["context_files"]), g
            for f in g["context_files"]:
                assert (d / f).is_file() and (d / f).stat().st_size > 0
            ctx = onnx.load(str(d / g["context_files"][0].replace("_qnn.bin", ".onnx")), load_external_data=False)
            assert {n.op_type for n in ctx.graph.node} == {"EPContext"}
            if comp != "unet" and policy in (*FP16_UNET_NORMS, "fp16") or policy == "fp16":  # no integer tensor
                assert g["htp_form"] == "float16" and g["cast_nodes_removed"] > 0, g
            elif policy in FP16_UNET_NORMS:  # the UNet's FP16 norms and SiLU between integer layers
                assert g["htp_form"] == "fp16 rounding removed" and g["cast_nodes_removed"] > 0, g
            else:
                assert g["htp_form"] == "as exported", g
            # no rounding pairs; I/O casts may stay, and the UNet's timestep sinusoid casts two table indices to int32
            assert g["qnn_op_counts"].get("Cast", 0) <= 4 + 2 * (comp == "unet"), g
            if policy == "w8a16":  # integer norms, SiLU and GELU run as integer ops (no float island)
                assert not {"GroupNorm", "LayerNorm", "InstanceNorm", "Sigmoid", "Gelu"} & set(g["qnn_float_ops"]), g
            elif policy in FP16_UNET_NORMS and comp == "unet":  # FP16 norms and SiLU stay float, as the policy says
                assert {"GroupNorm", "Sigmoid"} <= set(g["qnn_float_ops"]), g
        assert rec["verify_samples"] == 1 and rec["htp_outputs_finite"]
        for key in ("htp_vs_cpu_sqnr_db", "htp_vs_torch_sqnr_db", "cpu_vs_torch_sqnr_db"):
            assert np.isfinite(rec[key]), (comp, key, rec)
        if policy == "w8a16" and comp == "text_encoder":  # its attention MatMuls read an int16 second input, which
            # the HTP keeps at 16 bits (a uint16 one the EP makes 8-bit: 27.8 dB from the CPU simulation before)
            assert manifest["components"][comp]["plan"]["int16_second_inputs"] > 0
            assert rec["htp_vs_cpu_sqnr_db"] >= 45, rec
        if policy in ("w8a16", "fp16") and comp == "unet":  # the timestep sinusoid in its float16-safe form (the
            # HTP computes float ops in float16: t x F at t ~ 1000 was off by a quarter radian, 35.5 / 37.7 dB before)
            assert rec["htp_vs_cpu_sqnr_db"] >= 45, rec
        print(f"{policy} {comp}: emulated HTP vs CPU {rec['htp_vs_cpu_sqnr_db']} dB, vs PyTorch "
              f"{rec['htp_vs_torch_sqnr_db']} dB (CPU vs PyTorch {rec['cpu_vs_torch_sqnr_db']} dB)")


@needs_qnn
def test_context_binary_reloads_and_reproduces(qnn_exports):
    """The written context model + binary (what an app loads) gives the same outputs on a second load."""
    from edgefusion.latency.qnn_backend import htp_session

    d = qnn_exports["default"]
    latent = json.loads((d / "manifest.json").read_text())["shapes"]["latent"]
    ctx = d / "qnn" / "vae_decoder" / "model_ctx.onnx"
    x = np.random.default_rng(0).standard_normal(latent).astype(np.float32)
    a = htp_session(ctx, "snapdragon8gen3").run(None, {"latent_sample": x})[0]
    b = htp_session(ctx, "snapdragon8gen3").run(None, {"latent_sample": x})[0]
    assert a.shape == (1, 3, 32, 32) and np.isfinite(a).all() and np.array_equal(a, b)


@needs_qnn
def test_unsupported_graph_is_reported_with_its_blocking_op_types(tmp_path):
    """A graph the HTP cannot take wholly: not compiled, and the op type that keeps it off is named."""
    from edgefusion.latency.qnn_backend import compile_for_htp

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Det", ["r"], ["y"])],
                              "g", [x], [y])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(path))
    rec = compile_for_htp(path, "snapdragon8gen3", tmp_path / "ctx" / "g_ctx.onnx", tmp_path / "work")
    assert rec["compiled"] is False and rec["blocking_op_types"] == {"Det": 1}, rec
    assert not list((tmp_path / "ctx").glob("*"))
