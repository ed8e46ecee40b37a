"""Device profiles, the emulated latency model, attention tiling and the latency-backend plug-in slot."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import yaml

from edgefusion.errors import EdgeFusionError
from edgefusion.latency.device import DeviceProfile, device_names, load_device


def _profile_dict(name="exynos2400") -> dict:
    return load_device(name).to_dict()


def test_shipped_profiles_are_valid_and_sourced():
    from edgefusion.resources import config_dir

    assert {"exynos2400", "exynos2200", "generic"} <= set(device_names())
    for name in device_names():
        d = load_device(name)
        assert d.sram_bytes > 0 and d.dram_bytes_per_s > 0 and d.tensor_macs_per_s > 0
        text = (config_dir("devices") / f"{name}.yaml").read_text()
        from edgefusion.latency.device import REQUIRED

        fields = {k for keys in REQUIRED.values() for k in keys}
        figures = [ln for ln in text.splitlines() if ln.strip().split(":")[0] in fields]
        assert len(figures) == sum(len(k) for k in REQUIRED.values()) and all("# [" in ln for ln in figures), \
            f"{name}: every hardware figure says where it comes from"
    ex = load_device("exynos2400")
    assert ex.tensor_engine["macs_per_cycle"] == 17408 and ex.memory["sram_mb"] == 6.0


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d["memory"].__setitem__("dram_gb_per_s", -5), "memory.dram_gb_per_s"),
    (lambda d: d["memory"].__setitem__("sram_mb", 0), "memory.sram_mb"),
    (lambda d: d["tensor_engine"].__setitem__("efficiency", 1.5), "tensor_engine.efficiency"),
    (lambda d: d.pop("limits"), "limits"),
    (lambda d: d["overheads"].pop("per_node_us"), "overheads.per_node_us"),
    (lambda d: d["throughput"]["tensor_engine"].__setitem__("INT4", 2.0), "INT4"),
    (lambda d: d["op_precisions"].__setitem__("Conv", []), "op_precisions.Conv"),
])
def test_bad_profiles_are_refused_with_the_field_named(tmp_path, mutate, words):
    data = _profile_dict()
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(EdgeFusionError) as err:
        load_device(str(path))
    assert words in str(err.value) and "\n" not in str(err.value)


def test_unknown_device_names_the_choices():
    with pytest.raises(EdgeFusionError, match="unknown device 'exynos9999'.*exynos2400"):
        load_device("exynos9999")


def test_attention_tiling_is_exact_and_chosen_when_sram_is_small(tiny_float_graphs, tiny_calibration, tmp_path):
    """Tiled float graph == untiled graph; a device with a tiny SRAM gets tiled, a roomy one does not."""
    from edgefusion.latency.estimate import tile_for_device
    from edgefusion.runtime.session import open_session, run_session
    from edgefusion.tiling.attention import find_attention_sites, tile_attention

    path = tiny_float_graphs["unet"]
    model = onnx.load(str(path))
    sites = find_attention_sites(model)
    assert len(sites) >= 2 and all(s.lq >= 16 for s in sites)
    _, ver = tiny_calibration
    feeds = ver.samples["unet"][0].inputs
    ref = run_session(open_session(path), feeds)[0]
    tiled = tile_attention(copy.deepcopy(model), {s.softmax: 3 for s in sites})  # uneven last tile on purpose
    onnx.checker.check_model(tiled)
    assert sum(n.op_type == "Softmax" for n in tiled.graph.node) == sum(-(-s.lq // 3) for s in sites)
    onnx.save(tiled, str(tmp_path / "tiled.onnx"))
    out = run_session(open_session(tmp_path / "tiled.onnx"), feeds)[0]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)

    roomy = load_device("exynos2400")
    assert tile_for_device(copy.deepcopy(model), "unet", roomy) == {}  # everything fits 6 MB already
    # an SRAM that holds each site's q, k and v but not its softmax tensors, and a slow DRAM to spill them to
    from edgefusion.latency.op_graph import build_op_graph

    og = build_op_graph(model, "unet")
    by_name = {op.name: op for op in og.ops}
    qkv = max(sum(og.tensor_bytes[t] for t in by_name[s.nodes[0]].inputs + by_name[s.nodes[-1]].inputs[1:])
              for s in sites)
    scores = min(og.tensor_bytes[by_name[s.nodes[0]].outputs[0]] for s in sites)
    data = roomy.to_dict()
    data["memory"]["sram_mb"] = (qkv + scores / 2) / 2**20
    data["memory"]["dram_gb_per_s"] = 0.001
    small = DeviceProfile.from_dict(data)
    small_model = copy.deepcopy(model)
    decided = tile_for_device(small_model, "unet", small)
    assert decided and all(d["tiles"] > 1 and d["ms_tiled"] < d["ms_untiled"] for d in decided.values())
    onnx.save(small_model, str(tmp_path / "small.onnx"))
    out = run_session(open_session(tmp_path / "small.onnx"), feeds)[0]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_cost_model_roofline_and_spill():
    """Compute-bound vs DRAM-bound kernels, fusion of an elementwise tail, SRAM spill of a big tensor."""
    from edgefusion.latency.cost_model import estimate_graph
    from edgefusion.latency.op_graph import Op, OpGraph

    dev = load_device("exynos2400")
    mb = 2**20
    conv = Op("conv", "Conv", "Conv", "tensor_engine", "W8A8", 10**10, 10**6, ["x"], ["y"], 10**6, "b")
    add = Op("add", "Add", "_elementwise", "vector_engine", "W8A8", 0, 10**6, ["y", "x"], ["z"], 0, "b",
             fusable=True)
    g = OpGraph("unet", [conv, add], {"x": 1 * mb, "y": 1 * mb, "z": 1 * mb}, ["x"], ["z"])
    cost = estimate_graph(g, dev)
    assert len(cost.kernels) == 1 and cost.kernels[0].ops == ["conv", "add"]  # bias/residual add fused
    expected = 10**10 / dev.tensor_macs_per_s * 1e3
    assert cost.kernels[0].compute_ms == pytest.approx(expected)
    assert cost.ms == pytest.approx(max(cost.kernels[0].compute_ms, cost.kernels[0].dram_ms)
                                    + dev.overheads["per_node_us"] / 1e3 + dev.overheads["per_graph_us"] / 1e3)
    big = OpGraph("unet", [copy.deepcopy(conv)], {"x": 1 * mb, "y": 64 * mb}, ["x"], ["y"])
    assert estimate_graph(big, dev).kernels[0].spilled  # 65 MB working set > 6 MB SRAM
    w16 = OpGraph("unet", [dataclasses.replace(conv, precision="W8A16")], {"x": 1 * mb, "y": 1 * mb}, ["x"], ["y"])
    assert estimate_graph(w16, dev).kernels[0].compute_ms == pytest.approx(2 * expected)  # int16 acts: half rate


def test_export_manifest_carries_the_latency_estimate(tiny_exports):
    from edgefusion.latency.estimate import estimate_export
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
    from edgefusion.latency.cost_model import estimate_graph
    from edgefusion.latency.op_graph import build_op_graph
    from edgefusion.quant.layers import find_layers
    from edgefusion.quant.plan import plan_quantization
    from edgefusion.quant.policy import load_policy, resolve_policy

    device = load_device("exynos2400")
    for policy in ("default", "w8a8"):
        qdq = build_op_graph(onnx.load(str(tiny_exports[policy] / "unet" / "npu.onnx"), load_external_data=False),
                             "unet")
        unsized = [t for op in qdq.ops for t in op.inputs + op.outputs if not qdq.tensor_bytes.get(t)]
        assert not unsized, unsized[:3]
        model = onnx.load(str(tiny_float_graphs["unet"]), load_external_data=False)
        layers = find_layers(model, "unet")
        planned = build_op_graph(model, "unet", plan_quantization(model, layers,
                                                                  resolve_policy(load_policy(policy), layers)))
        assert estimate_graph(qdq, device).ms == pytest.approx(estimate_graph(planned, device).ms, rel=0.01)


def test_estimate_from_architecture_matches_the_published_macs():
    """--model estimates from weight-free graphs; bk-sdm-tiny's MACs are the published 205.0 + 37.8 GMAC."""
    from edgefusion.latency.estimate import estimate_model

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
    from edgefusion.latency.estimate import estimate_export

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


def test_partitioning_fewest_parts_exact_chain_and_too_large_operator(tiny_exports, tiny_calibration, tmp_path):
    import shutil

    from edgefusion.runtime.chained import ChainedSession
    from edgefusion.runtime.session import open_session, run_session
    from edgefusion.tiling.partition import plan_partition, write_partitions

    shutil.copytree(tiny_exports["default"] / "unet", tmp_path / "unet")
    path = tmp_path / "unet" / "model.onnx"
    model = onnx.load(str(path), load_external_data=False)
    total_mb = sum(np.prod(t.dims) * (1 if t.data_type == onnx.TensorProto.INT8 else 4 if t.data_type == 1 else 2)
                   for t in model.graph.initializer) / 2**20
    plan = plan_partition(model, 0.15, 8192)
    assert plan.parts >= int(np.ceil(total_mb / 0.15 * 0.9)) and plan.parts > 2
    assert all(w <= 0.15 for w in plan.weight_mb)
    assert plan_partition(model, total_mb * 2, 8192).parts == 1
    files = write_partitions(path, plan, tmp_path / "unet")
    assert len(files) == plan.parts
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


def test_export_partitions_when_the_device_limit_is_small(tmp_path):
    out = tmp_path / "exp"
    r = subprocess.run([sys.executable, "-m", "edgefusion", "export", "--model", "tiny", "--out", str(out),
                        "--max-graph-mb", "0.15", "--calib-prompts", "1", "--calib-steps", "1", "--verify-prompts",
                        "1", "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((out / "manifest.json").read_text())
    part = m["components"]["unet"]["partition"]
    assert len(part["files"]) > 1 and part["chained_vs_whole_sqnr_db"] >= 100
    assert not (out / "unet" / "npu.onnx").exists() and all((out / f).is_file() for f in part["files"])
    # the batch-dynamic client graph keeps its own copy of the weights once the whole NPU graph is split
    assert (out / "unet" / "model.onnx.data").is_file() and m["components"]["unet"]["client"]["identical_to_npu_graph"]
    assert m["latency"]["components"]["unet"]["graphs"] == len(part["files"])
    g = subprocess.run([sys.executable, "-m", "edgefusion", "generate", str(out), "--prompt", "a red circle",
                        "--steps", "1", "--out", str(tmp_path / "img.png")], capture_output=True, text=True)
    assert g.returncode == 0 and (tmp_path / "img.png").is_file(), g.stderr[-2000:]


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
    assert mean_sqnr_db(untiled, tiled) > mean_sqnr_db(ref, untiled) + 10  # far below the quantization error
