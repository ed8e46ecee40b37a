"""Attention tiling: the rewrite is exact (head groups x query blocks), the planner decides from the latency
model, tiling never makes a site slower than its untiled cost, and a real export tiles on a small-SRAM device."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import yaml

from edgefusion.latency.device import DeviceProfile, load_device


def _small_sram(sram_mb: float = 0.1, dram_gb_per_s: float = 1.0) -> DeviceProfile:
    """An SRAM that holds a tiny-preset attention tile but not its whole softmax, and a slow DRAM to spill to."""
    return load_device("exynos2400").with_figures({"memory.sram_mb": sram_mb, "memory.dram_gb_per_s": dram_gb_per_s})


def test_tiling_is_exact_per_head_group_and_query_block(tiny_float_graphs, tiny_calibration, tmp_path):
    from edgefusion.graph.op_graph import TILE_KEY
    from edgefusion.runtime.session import open_session, run_session
    from edgefusion.tiling.attention import find_attention_sites, tile_attention

    path = tiny_float_graphs["unet"]
    model = onnx.load(str(path))
    sites = find_attention_sites(model)
    assert len(sites) >= 2 and all(s.lq >= 16 and s.heads > 1 for s in sites)
    _, ver = tiny_calibration
    feeds = ver.samples["unet"][0].inputs
    ref = run_session(open_session(path), feeds)[0]
    for choice in ({s.softmax: 3 for s in sites},  # query blocks only, uneven last tile on purpose
                   {s.softmax: (s.heads // 2, 5) for s in sites},  # head groups x uneven query blocks
                   {s.softmax: (1, s.lq) for s in sites}):  # one head per tile
        tiled = tile_attention(copy.deepcopy(model), choice)
        onnx.checker.check_model(tiled)
        marked = [n for n in tiled.graph.node if any(p.key == TILE_KEY for p in n.metadata_props)]
        assert marked and all("__t" in n.name for n in marked)
        onnx.save(tiled, str(tmp_path / "tiled.onnx"))
        out = run_session(open_session(tmp_path / "tiled.onnx"), feeds)[0]
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    first = tile_attention(copy.deepcopy(model), {sites[0].softmax: (sites[0].heads // 2, 5)})
    n_softmax = sum(n.op_type == "Softmax" for n in first.graph.node)
    assert n_softmax == len(sites) - 1 + 2 * -(-sites[0].lq // 5)
    with pytest.raises(ValueError, match="do not divide"):
        tile_attention(copy.deepcopy(model), {sites[0].softmax: (3, 8)})


def test_tiling_keeps_int16_second_inputs_exact(tiny_float_graphs, tiny_calibration, tmp_path):
    """A QDQ graph whose attention MatMuls read a requantized int16 second input (the Snapdragon profile's
    ``activations``) still shows its sites, and tiling them computes the same (the requantizer is per tensor, so
    each tile of it quantizes alike)."""
    from edgefusion.quant.policy import load_policy
    from edgefusion.quant.quantize_graph import quantize_graph
    from edgefusion.quant.storage import StorageNeeds
    from edgefusion.runtime.session import open_session, run_session
    from edgefusion.tiling.attention import find_attention_sites, tile_attention

    cal, ver = tiny_calibration
    qg = quantize_graph(tiny_float_graphs["unet"], tmp_path / "q.onnx", "unet", load_policy("w8a16"),
                        [s.inputs for s in cal.samples["unet"]], method="minmax",
                        storage=StorageNeeds(signed_16bit_second_input={"MatMul"}))
    assert qg.plan.signed_16bit_inputs
    model = onnx.load(str(qg.path))
    sites = find_attention_sites(model)
    assert sites and all("_int16_" in s.key and "_int16_" in s.value for s in sites)
    feeds = ver.samples["unet"][0].inputs
    ref = run_session(open_session(qg.path), feeds)[0]
    onnx.save(tile_attention(model, {s.softmax: (s.heads // 2, 5) for s in sites}), str(tmp_path / "tiled.onnx"))
    assert np.array_equal(run_session(open_session(tmp_path / "tiled.onnx"), feeds)[0], ref)


def test_candidates_cover_head_groups_and_query_blocks():
    from edgefusion.tiling.attention import AttentionSite
    from edgefusion.tiling.planner import candidate_tilings

    site = AttentionSite("s", [], "q", "o", -2, lq=4096, lk=4096, batch_heads=8, heads=8)
    cands = candidate_tilings(site, min_block=8, max_tiles=256)
    assert cands[0] == (8, 4096)  # untiled first
    assert {h for h, _ in cands} == {8, 4, 2, 1}
    assert all(8 % h == 0 and 4096 % b == 0 and (8 // h) * (4096 // b) <= 256 for h, b in cands)
    assert (1, 256) in cands and (8, 16) in cands and (1, 64) not in cands  # 512 tiles: over the cap


@pytest.fixture(scope="module")
def tiny_unet_plan(tiny_float_graphs):
    from edgefusion.quant.layers import find_layers
    from edgefusion.quant.plan import plan_quantization
    from edgefusion.quant.policy import load_policy, resolve_policy

    model = onnx.load(str(tiny_float_graphs["unet"]), load_external_data=False)
    layers = find_layers(model, "unet")
    return model, plan_quantization(model, layers, resolve_policy(load_policy("default"), layers))


def test_planner_tiles_only_where_it_pays_and_never_makes_a_site_slower(tiny_unet_plan):
    from edgefusion.deploy.tiling import extend_plan, tile_for_device
    from edgefusion.graph.op_graph import build_op_graph
    from edgefusion.latency.cost_model import estimate_graph
    from edgefusion.tiling.attention import find_attention_sites

    model, plan = tiny_unet_plan
    assert tile_for_device(copy.deepcopy(model), "unet", load_device("exynos2400"), copy.deepcopy(plan)) == {}
    sites = {s.softmax: s for s in find_attention_sites(model)}
    for device in (_small_sram(), _small_sram(0.3, 10.0)):
        tiled, tiled_plan = copy.deepcopy(model), copy.deepcopy(plan)
        decided = tile_for_device(tiled, "unet", device, tiled_plan)
        assert decided and all(d["tiles"] > 1 and d["ms_tiled"] < d["ms_untiled"] for d in decided.values())
        extend_plan(tiled_plan, tiled)
        whole = estimate_graph(build_op_graph(tiled, "unet", tiled_plan), device)
        for name, d in decided.items():
            nodes = set(sites[name].nodes)
            in_context = sum(k.ms for k in whole.kernels if k.name.split("__t")[0] in nodes)
            assert 0 < in_context <= d["ms_untiled"], (name, in_context, d)
        untiled = estimate_graph(build_op_graph(model, "unet", plan), device)
        assert whole.ms < untiled.ms


def test_export_tiles_and_partitions_for_a_small_device(tmp_path):
    """The export's tiling path in the default suite: the tiny preset on a device whose SRAM cannot hold its
    attention (a profile YAML of our own, from the command line), with the manifest's tiling record and the
    80 dB / 0.1 dB acceptance; the same export also splits the tiled UNet for a small per-graph weight limit, and
    `generate` runs the chained parts."""
    from edgefusion.deploy.estimate import estimate_export
    from edgefusion.export.manifest import ExportManifest
    from edgefusion.export.run_export import TILING_ACCURACY_DB
    from edgefusion.graph.op_graph import TILE_KEY

    data = _small_sram().to_dict()
    data["name"] = "tiny-sram-npu"
    profile = tmp_path / "tiny-sram-npu.yaml"
    profile.write_text(yaml.safe_dump(data))
    out = tmp_path / "exp"
    r = subprocess.run([sys.executable, "-m", "edgefusion", "export", "--model", "tiny", "--out", str(out),
                        "--device", str(profile), "--max-graph-mb", "0.15", "--calib-prompts", "1",
                        "--calib-steps", "1", "--verify-prompts", "1", "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    m = ExportManifest.load(out)
    assert m.device == "tiny-sram-npu" and m.tiling["enabled"] and m.tiling["sites"]
    for site, d in m.tiling["sites"].items():
        assert site.startswith(("unet/", "vae_decoder/"))
        assert d["tiles"] > 1 and d["ms_tiled"] < d["ms_untiled"] and {"heads", "block"} <= set(d)
    rec = m.components["unet"].tiling
    assert rec["sites"] == sum(s.startswith("unet/") for s in m.tiling["sites"]) > 0
    # accepted: identical to the untiled graph (>= 80 dB), or as accurate against PyTorch within 0.1 dB
    assert rec["tiled_vs_untiled_sqnr_db"] >= 80 or \
        abs(rec["tiled_vs_torch_sqnr_db"] - rec["untiled_vs_torch_sqnr_db"]) <= TILING_ACCURACY_DB
    assert rec["max_abs_diff"] == 0.0  # integer attention under `default`: tiles are bit-identical
    assert m.components["unet"].quant_vs_torch_sqnr_db == rec["tiled_vs_torch_sqnr_db"]  # the graph written
    # partitioned after tiling: parts verified against the whole (tiled) graph
    part = m.components["unet"].partition
    assert len(part["files"]) > 1 and part["chained_vs_whole_sqnr_db"] >= 100
    assert not (out / "unet" / "npu.onnx").exists() and all((out / f).is_file() for f in part["files"])
    # the batch-dynamic client graph keeps its own copy of the weights once the whole NPU graph is split
    assert (out / "unet" / "model.onnx.data").is_file() and m.components["unet"].client["identical_to_npu_graph"]
    assert any(p.key == TILE_KEY for f in part["files"]
               for n in onnx.load(str(out / f), load_external_data=False).graph.node for p in n.metadata_props)
    assert m.latency["components"]["unet"]["graphs"] == len(part["files"])
    report = estimate_export(out, backend="emulated")  # re-read with the profile saved beside the graphs
    assert report.device == "tiny-sram-npu" and report.tiled and set(report.tiling) == set(m.tiling["sites"])
    assert json.loads((out / "latency.json").read_text())["tiling"] == m.tiling["sites"]
    g = subprocess.run([sys.executable, "-m", "edgefusion", "generate", str(out), "--prompt", "a red circle",
                        "--steps", "1", "--out", str(tmp_path / "img.png")], capture_output=True, text=True)
    assert g.returncode == 0 and (tmp_path / "img.png").is_file(), g.stderr[-2000:]
