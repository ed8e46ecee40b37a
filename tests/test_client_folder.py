"""The export folder as ONNX Runtime clients read it: configs, tokenizer files, model_index, the batch-dynamic UNet,
every graph fully shaped; diffusers' OnnxStableDiffusionPipeline (installed here) generates from it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

CLIENT_SCRIPT = Path(__file__).parent / "clients" / "generate_with_clients.py"


def _unshaped(path: Path) -> list[str]:
    model = onnx.load(str(path), load_external_data=False)
    g = model.graph
    known = {v.name: v for v in list(g.value_info) + list(g.output) + list(g.input)}
    out = []
    for n in g.node:
        for o in n.output:
            t = known[o].type.tensor_type if o in known else None
            if t is None or not all(d.HasField("dim_value") for d in t.shape.dim):
                out.append(o)
    return out


def test_component_configs_and_model_index(tiny_exports):
    d = tiny_exports["default"]
    unet = json.loads((d / "unet" / "config.json").read_text())
    vae = json.loads((d / "vae_decoder" / "config.json").read_text())
    te = json.loads((d / "text_encoder" / "config.json").read_text())
    assert unet["in_channels"] == 4 and unet["cross_attention_dim"] == 32 and unet["_class_name"] == "UNet2DConditionModel"
    assert vae["scaling_factor"] == pytest.approx(0.18215) and vae["_class_name"] == "AutoencoderKL"
    assert te["hidden_size"] == 32 and te["model_type"] == "clip_text_model"
    index = json.loads((d / "model_index.json").read_text())
    assert index["_class_name"] == "OnnxStableDiffusionPipeline"
    for comp in ("text_encoder", "unet", "vae_decoder"):
        assert index[comp] == ["diffusers", "OnnxRuntimeModel"] and (d / comp / "model.onnx").is_file()
    assert index["vae_encoder"] == [None, None] and index["scheduler"] == ["diffusers", "EulerDiscreteScheduler"]


def test_tokenizer_files_agree(tiny_exports):
    """vocab.json / merges.txt (what the slow tokenizer reads) hold the BPE model of tokenizer.json; a tokenizer
    built from them alone gives the same ids."""
    from transformers import CLIPTokenizer

    d = tiny_exports["default"] / "tokenizer"
    model = json.loads((d / "tokenizer.json").read_text())["model"]
    assert json.loads((d / "vocab.json").read_text()) == model["vocab"]
    merges = (d / "merges.txt").read_text().splitlines()
    assert merges[0].startswith("#version") and merges[1:] == [" ".join(m) if isinstance(m, list) else m
                                                               for m in model["merges"]]
    saved = CLIPTokenizer.from_pretrained(str(d))
    rebuilt = CLIPTokenizer(vocab=json.loads((d / "vocab.json").read_text()),
                            merges=[tuple(m.split()) for m in merges[1:]], model_max_length=saved.model_max_length)
    text = "a small red triangle in the top left on a blue background"
    assert rebuilt(text).input_ids == saved(text).input_ids


def test_npu_graphs_static_fully_shaped_and_int32_ids(tiny_exports):
    d = tiny_exports["default"]
    m = json.loads((d / "manifest.json").read_text())
    assert m["components"]["unet"]["file"] == "unet/npu.onnx"
    for comp, file in (("text_encoder", "text_encoder/model.onnx"), ("unet", "unet/npu.onnx"),
                       ("vae_decoder", "vae_decoder/model.onnx")):
        assert _unshaped(d / file) == [], comp
        assert m["components"][comp]["deploy_form"]["unshaped_tensors"] == 0
        for i in onnx.load(str(d / file), load_external_data=False).graph.input:
            assert all(x.HasField("dim_value") for x in i.type.tensor_type.shape.dim)  # the NPU graph is static
    ids = onnx.load(str(d / "text_encoder" / "model.onnx"), load_external_data=False).graph.input[0]
    assert ids.name == "input_ids" and ids.type.tensor_type.elem_type == onnx.TensorProto.INT32


def test_client_unet_batch2_equals_npu_graph(tiny_exports):
    """The client UNet takes batch 2 (CFG) with one timestep and computes exactly what the NPU graph computes."""
    from edgefusion.runtime.session import open_session, run_session

    d = tiny_exports["default"]
    rec = json.loads((d / "manifest.json").read_text())["components"]["unet"]["client"]
    assert rec["file"] == "unet/model.onnx" and rec["identical_to_npu_graph"] is True
    client = onnx.load(str(d / "unet" / "model.onnx"), load_external_data=False)
    assert client.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # weights stored once: the client's loop body points at the NPU graph's data file
    body = next(a.g for a in client.graph.node[-2].attribute if a.name == "body")
    assert {e.value for t in body.initializer for e in t.external_data if e.key == "location"} == {"npu.onnx.data"}
    rng = np.random.default_rng(1)
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim]
              for i in onnx.load(str(d / "unet" / "npu.onnx"), load_external_data=False).graph.input}
    x = rng.standard_normal([2] + shapes["sample"][1:]).astype(np.float32)
    e = rng.standard_normal([2] + shapes["encoder_hidden_states"][1:]).astype(np.float32)
    t = np.array([500.0], np.float32)
    npu = open_session(d / "unet" / "npu.onnx")
    want = np.concatenate([run_session(npu, {"sample": x[i:i + 1], "timestep": t,
                                             "encoder_hidden_states": e[i:i + 1]})[0] for i in range(2)])
    got = run_session(open_session(d / "unet" / "model.onnx"),
                      {"sample": x, "timestep": t, "encoder_hidden_states": e})[0]
    assert np.array_equal(got, want)


def test_client_check_tells_other_kernels_from_a_miswired_client(tiny_exports):
    """The export's client check passes a client that is identical, or as accurate against PyTorch as the NPU graph
    (onnxruntime may pick other kernels inside the Loop body), and stops one that is mis-wired."""
    from edgefusion.export.client_graph import CLIENT_ACCURACY_DB, client_check_problem, verify_client_graph
    from edgefusion.runtime.session import open_session, run_session

    d = tiny_exports["default"]
    shapes = {i.name: [x.dim_value for x in i.type.tensor_type.shape.dim]
              for i in onnx.load(str(d / "unet" / "npu.onnx"), load_external_data=False).graph.input}
    rng = np.random.default_rng(2)
    samples = [{"sample": rng.standard_normal(shapes["sample"]).astype(np.float32),
                "timestep": np.array([500.0 - 400 * i], np.float32),
                "encoder_hidden_states": rng.standard_normal(shapes["encoder_hidden_states"]).astype(np.float32)}
               for i in range(2)]
    npu = open_session(d / "unet" / "npu.onnx")
    outs = [run_session(npu, s)[0] for s in samples]
    scale = float(np.std(np.concatenate(outs)))
    torch_refs = [o + rng.normal(0, 0.01 * scale, o.shape).astype(np.float32) for o in outs]  # 40 dB "PyTorch"
    client = d / "unet" / "model.onnx"

    same = verify_client_graph(client, samples, outs, torch_refs)
    assert same["identical_to_npu_graph"] and client_check_problem(same) is None
    # other kernels: the NPU graph's outputs off by about as much as the client's, equally accurate vs PyTorch
    other = [r + rng.normal(0, 0.01 * scale, r.shape).astype(np.float32) for r in torch_refs]
    rec = verify_client_graph(client, samples, other, torch_refs)
    assert not rec["identical_to_npu_graph"] and rec["vs_npu_graph_sqnr_db"] < 80
    assert abs(rec["vs_torch_sqnr_db"] - rec["npu_graph_vs_torch_sqnr_db"]) < CLIENT_ACCURACY_DB
    assert client_check_problem(rec) is None
    # mis-wired: the client compared with the NPU graph's outputs in the other order (as if it swapped the samples)
    bad = verify_client_graph(client, samples, outs[::-1], torch_refs[::-1])
    problem = client_check_problem(bad)
    assert problem and "differs from the NPU graph" in problem and "vs PyTorch" in problem


def test_diffusers_onnx_pipeline_generates_the_runtime_image(tiny_exports, tmp_path):
    """diffusers' OnnxStableDiffusionPipeline (this environment's diffusers) loads the folder with vae_encoder=None
    and, given the same scheduler and starting noise, produces edgefusion's runtime image bit for bit when the
    runtime opens the graphs as diffusers does (onnxruntime's default session options)."""
    from diffusers import DDIMScheduler

    from edgefusion.runtime.pipeline import OnnxStableDiffusion

    d = tiny_exports["default"]
    prompt, seed, steps, gs = "a red cube on a table", 3, 3, 7.5
    proc = subprocess.run([sys.executable, str(CLIENT_SCRIPT), str(d), str(tmp_path), "--prompt", prompt, "--seed",
                           str(seed), "--steps", str(steps), "--guidance", str(gs), "--clients", "diffusers"],
                          capture_output=True, text=True, timeout=600)
    result = json.loads(next(l[7:] for l in proc.stdout.splitlines() if l.startswith("RESULT ")))
    assert result["diffusers"]["ok"], result["diffusers"]
    runtime = OnnxStableDiffusion(d, ort_defaults=True)
    cfg = json.loads((d / "scheduler" / "scheduler_config.json").read_text())
    runtime.scheduler = DDIMScheduler.from_config(cfg, clip_sample=False)
    ours = runtime(prompt, seed=seed, steps=steps, guidance_scale=gs)
    assert np.array_equal(np.load(tmp_path / "diffusers.npy"), ours)
