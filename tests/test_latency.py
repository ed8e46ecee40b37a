"""The latency estimate of exports and architectures, partitioning, and the latency-backend plug-in slot."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from edgefusion.errors import EdgeFusionError
from edgefusion.latency.device import load_device


def test_export_manifest_carries_the_latency_estimate(tiny_exports):
    from edgefusion.deploy.estimate import estimate_export
    from edgefusion.latency.report import LatencyReport

    d = tiny_exports["default"]
    m = json.loads((d / "manifest.json").read_text())
    lat = m["latency"]
    assert lat["device"] == "exynos2400" and lat["backend"] == "emulated"
    assert set(lat["components"]) == {"text_encoder", "unet", "vae_decoder"}
    per_image = sum(c["ms"] * c["calls"] for c in lat["components"].values())
    assert lat["total_ms"] == pytest.approx(per_image, rel=1e-3)
    assert lat["components"]["unet"]["calls"] == m["source"]["sampler"]["num_inference_steps"] * 2  # CFG
    full = LatencyReport.load(d / "latency.json")
    assert LatencyReport.from_dict(json.loads(json.dumps(full.to_dict()))) == full
    assert full.components["unet"].kernel_table and full.components["unet"].gmacs > 0
    # the same graphs on a slower device profile take longer
    slow = estimate_export(d, device="generic", backend="emulated")
    assert slow.components["unet"].ms > full.components["unet"].ms
    w8a8 = LatencyReport.load(tiny_exports["w8a8"] / "latency.json")
    assert w8a8.components["text_encoder"].ms < full.components["text_encoder"].ms  # int8 TE beats the FP16 one


def test_qdq_graph_and_float_graph_plus_plan_give_the_same_npu_view(tiny_exports, tiny_float_graphs):
    """Every activation tensor of an exported QDQ graph has its size (onnx infers no shape for GroupNormalization,
    which once left every tensor after the first GroupNorm at 0 bytes), and the QDQ graph costs what the float
    graph plus the exporter's plan costs (the view the skeleton estimates and the automatic policy use)."""
    from edgefusion.deploy.tiling import plan_and_tile
    from edgefusion.latency.cost_model import estimate_graph
    from edgefusion.graph.op_graph import build_op_graph
    from edgefusion.quant.layers import find_layers
    from edgefusion.quant.policy import load_policy, resolve_policy

    device = load_device("exynos2400")
    for policy in ("default", "w8a8"):
        qdq = build_op_graph(onnx.load(str(tiny_exports[policy] / "unet" / "npu.onnx"), load_external_data=False),
                             "unet")
        unsized = [t for op in qdq.ops for t in op.inputs + op.outputs if not qdq.tensor_bytes.get(t)]
        assert not unsized, unsized[:3]
        model = onnx.load(str(tiny_float_graphs["unet"]), load_external_data=False)
        layers = find_layers(model, "unet")
        # the exporter's form of the float graph (w8a8: integer GroupNorms as layer norm + depthwise convolution)
        plan, _ = plan_and_tile(model, "unet", device, layers, resolve_policy(load_policy(policy), layers), False)
        if policy == "w8a8":
            assert not any(n.op_type == "GroupNormalization" for n in model.graph.node)
        planned = build_op_graph(model, "unet", plan)
        assert estimate_graph(qdq, device).ms == pytest.approx(estimate_graph(planned, device).ms, rel=0.01)


def test_estimate_from_architecture_matches_the_published_macs():
    """--model estimates from weight-free graphs; bk-sdm-tiny's MACs are the published 205.0 + 37.8 GMAC."""
    from edgefusion.deploy.estimate import estimate_model

    rep = estimate_model("bk-sdm-tiny", mpq_policy="w8a16", steps=2, guidance_scale=1.0, height=512, width=512,
                         backend="emulated")
    assert rep.components["unet"].gmacs == pytest.approx(205.0 + 37.8, rel=0.005)
    assert rep.components["unet"].weight_mb == pytest.approx(323.4, rel=0.01)  # int8 weights: 1 byte / param
    assert rep.components["unet"].calls == 2 and rep.components["text_encoder"].calls == 1
    assert rep.total_ms == pytest.approx(sum(c.ms * c.calls for c in rep.components.values()), rel=1e-3)


class _FakeBackend:
    name = "fake-npu"
    devices = None

    def unavailable_reason(self):
        return None

    def estimate(self, model, component, device, plan=None):
        from edgefusion.latency.cost_model import GraphCost

        return GraphCost(kernels=[], ms=1.0, weight_bytes=0, dram_bytes=0, peak_sram_bytes=0, macs=0, ops=0)


class _MissingSdk(_FakeBackend):
    name = "missing-sdk"

    def unavailable_reason(self):
        return "SDK not installed"


def test_backends_are_discovered_through_entry_points(monkeypatch, tiny_exports):
    from importlib.metadata import EntryPoint

    import edgefusion.latency.backends as backends
    from edgefusion.deploy.estimate import estimate_export

    eps = [EntryPoint("missing-sdk", "tests.test_latency:_MissingSdk", backends.GROUP),
           EntryPoint("fake-npu", "tests.test_latency:_FakeBackend", backends.GROUP)]
    monkeypatch.setattr(backends, "entry_points", lambda group: eps if group == backends.GROUP else [])
    monkeypatch.setattr(EntryPoint, "load", lambda self: {"missing-sdk": _MissingSdk, "fake-npu": _FakeBackend}[
        self.name])
    monkeypatch.delenv("EXYNOS_AI_LITECORE_ROOT", raising=False)
    assert {"emulated", "exynos-ai-studio", "fake-npu", "missing-sdk"} <= set(backends.discover_backends())
    rep = estimate_export(tiny_exports["default"])  # auto: the first available plug-in wins
    assert rep.backend == "fake-npu" and rep.components["unet"].ms == 1.0
    assert any("missing-sdk" in n and "SDK not installed" in n for n in rep.notes)
    assert any("exynos-ai-studio" in n and "EXYNOS_AI_LITECORE_ROOT" in n for n in rep.notes)
    with pytest.raises(EdgeFusionError, match="cannot run here: SDK not installed"):
        estimate_export(tiny_exports["default"], backend="missing-sdk")
    with pytest.raises(EdgeFusionError, match="unknown latency backend 'nope'"):
        estimate_export(tiny_exports["default"], backend="nope")
    assert estimate_export(tiny_exports["default"], backend="emulated").backend == "emulated"


def test_exynos_sdk_is_detected_from_its_environment_variable(monkeypatch, tmp_path):
    from edgefusion.latency.backends import ExynosAIStudioBackend, select_backend

    monkeypatch.delenv("EXYNOS_AI_LITECORE_ROOT", raising=False)
    assert ExynosAIStudioBackend().unavailable_reason()
    monkeypatch.setenv("EXYNOS_AI_LITECORE_ROOT", str(tmp_path))
    assert ExynosAIStudioBackend().unavailable_reason() is None
    backend, _ = select_backend("auto", load_device("exynos2400"))
    assert backend.name == "exynos-ai-studio"
    backend, _ = select_backend("auto", load_device("generic"))  # not an Exynos profile
    assert backend.name == "emulated"


def test_cli_latency(tiny_exports, tmp_path):
    run = [sys.executable, "-m", "edgefusion"]
    ok = subprocess.run(run + ["latency", str(tiny_exports["default"]), "--backend", "emulated"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "per image" in ok.stdout and "unet" in ok.stdout
    both = subprocess.run(run + ["latency", str(tiny_exports["default"]), "--model", "tiny"], capture_output=True,
                          text=True)
    assert both.returncode == 1 and "either an export folder or --model" in both.stderr
    bad = subprocess.run(run + ["latency", "--model", "tiny", "--device", "nope"], capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown device 'nope'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def _init_bytes(t: onnx.TensorProto) -> int:
    return int(np.prod(t.dims)) * {onnx.TensorProto.INT8: 1, onnx.TensorProto.UINT8: 1, onnx.TensorProto.INT16: 2,
                                   onnx.TensorProto.UINT16: 2, onnx.TensorProto.FLOAT16: 2,
                                   onnx.TensorProto.INT64: 8}.get(t.data_type, 4)


def test_partitioning_fewest_parts_exact_chain_and_too_large_operator(tiny_exports, tiny_calibration, tmp_path):
    import shutil

    from edgefusion.runtime.chained import ChainedSession
    from edgefusion.runtime.session import open_session, run_session
    from edgefusion.tiling.partition import plan_partition, write_partitions

    shutil.copytree(tiny_exports["default"] / "unet", tmp_path / "unet")
    path = tmp_path / "unet" / "npu.onnx"  # the NPU graph (model.onnx is the client's batch loop around it)
    model = onnx.load(str(path), load_external_data=False)
    total_mb = sum(_init_bytes(t) for t in model.graph.initializer) / 2**20
    plan = plan_partition(model, 0.15, 8192)
    assert plan.parts > 2 and plan_partition(model, total_mb * 2, 8192).parts == 1
    files = write_partitions(path, plan, tmp_path / "unet")
    assert len(files) == plan.parts
    # measured on the written files: every part within the limit, and no two neighbours would fit together (else
    # one part fewer would do: the parts are not the fewest)
    weights = [{t.name: _init_bytes(t) for t in onnx.load(str(f), load_external_data=False).graph.initializer}
               for f in files]
    assert all(sum(w.values()) <= 0.15 * 2**20 for w in weights)
    assert all(sum({**a, **b}.values()) > 0.15 * 2**20 for a, b in zip(weights, weights[1:]))
    whole, chain = open_session(path), ChainedSession(files)
    _, ver = tiny_calibration
    for s in ver.samples["unet"][:3]:
        np.testing.assert_array_equal(run_session(chain, s.inputs)[0], run_session(whole, s.inputs)[0])
    # cuts ship the 8-bit tensors (the DequantizeLinear travels with its consumer)
    part0 = onnx.load(str(files[0]), load_external_data=False)
    assert any(o.type.tensor_type.elem_type == onnx.TensorProto.UINT8 or
               o.type.tensor_type.elem_type == onnx.TensorProto.INT8 for o in part0.graph.output)
    with pytest.raises(EdgeFusionError, match=r"operator '.+' alone needs .* raise the limits to at least"):
        plan_partition(model, 0.001, 8192)


def test_tiled_float_attention_feeding_quantizers_is_as_accurate(tiny_float_graphs, tiny_calibration, tmp_path):
    """Why the export accepts a tiled graph that is not bit-identical: with FP16 attention between 8-bit layers a
    tile's different summation order can move a value into the neighbouring quantization bin, so tiled and untiled
    outputs differ slightly, but they are equally accurate against the float graph (the export's criterion, within
    0.1 dB; an integer attention stays bit-identical, as above)."""
    from edgefusion.export.run_export import TILING_ACCURACY_DB
    from edgefusion.metrics import mean_sqnr_db
    from edgefusion.quant.policy import PolicySpec
    from edgefusion.quant.precision import Precision
    from edgefusion.quant.quantize_graph import quantize_graph
    from edgefusion.runtime.session import open_session, run_session
    from edgefusion.tiling.attention import find_attention_sites, tile_attention

    cal, ver = tiny_calibration
    spec = PolicySpec("fp16-attention", [("re:^unet/time_proj/", Precision.FP32), ("op:Softmax", Precision.FP16),
                                         ("op:MatMul", Precision.FP16), ("_default", Precision.W8A8)])
    path = tiny_float_graphs["unet"]
    qg = quantize_graph(path, tmp_path / "q.onnx", "unet", spec, (s.inputs for s in cal.samples["unet"][:8]))
    feeds = [s.inputs for s in ver.samples["unet"][:4]]
    ref = [run_session(open_session(path), f)[0] for f in feeds]
    untiled = [run_session(open_session(qg.path), f)[0] for f in feeds]
    model = onnx.load(str(qg.path))
    tile_attention(model, {s.softmax: 3 for s in find_attention_sites(model)})
    onnx.save(model, str(tmp_path / "tiled.onnx"))
    sess = open_session(tmp_path / "tiled.onnx")
    tiled = [run_session(sess, f)[0] for f in feeds]
    assert abs(mean_sqnr_db(ref, tiled) - mean_sqnr_db(ref, untiled)) <= TILING_ACCURACY_DB
    # far below the quantization error: the flipped bins carry a quarter of its noise power at most (measured:
    # tiled vs untiled 28.6 dB against 18.8 dB of quantization error, with int32 biases and integer kernels)
    assert mean_sqnr_db(untiled, tiled) > mean_sqnr_db(ref, untiled) + 6
