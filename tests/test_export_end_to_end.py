"""`edgefusion export` + `edgefusion generate` on the tiny preset, through the library and the CLI."""

import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgefusion.export.manifest import ExportManifest


def test_export_folder_layout_and_manifest(tiny_exports):
    d = tiny_exports["default"]
    for comp in ("text_encoder", "unet", "vae_decoder"):
        assert (d / comp / "model.onnx").is_file()
        assert (d / comp / "precisions.json").is_file()
    for extra in ("tokenizer", "scheduler", "model_index.json", "policy.yaml", "verify_quantized.png"):
        assert (d / extra).exists(), extra
    assert not (d / "float").exists()  # float graphs are dropped unless --keep-float
    m = ExportManifest.load(d)
    assert ExportManifest.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    assert m.policy["name"] == "default" and m.device == "exynos2400"
    assert m.calibration["samples"]["unet"] == 4 * 4 * 2  # prompts x steps x CFG branches
    unet = m.components["unet"]
    assert unet.layers["Softmax"] == {"W8A16": unet.layers["Softmax"]["W8A16"]}
    # the recipe by op type, except conv_in and the outermost level of the U (first down block, last up block,
    # output head): 16-bit activations there, but for the norms and SiLU (FP16) and the attention (W8A8); the
    # level's edge layers (time projections, the next level's first shortcut) read and write 16 bits too
    layers = json.loads((d / "unet" / "precisions.json").read_text())["layers"]
    outer = ("unet/conv_in/", "unet/down_blocks.0.", "unet/up_blocks.1.", "unet/conv_norm_out/", "unet/conv_act/",
             "unet/conv_out/", "unet/down_blocks.1.resnets.0.conv_shortcut/")  # tiny has two up blocks
    seen = Counter()
    for name, la in layers.items():
        op, prec = la["op_type"], la["precision"]
        if op in ("GroupNorm", "SiLU", "LayerNorm"):
            want = "FP16"
        elif op == "Conv":
            want = "W8A16" if name.startswith(outer) else "W8A8"
        elif re.search(r"\.attn[12](\.to_[qkv])?/", name) and op == "MatMul":
            want = "W8A8"
        elif ".time_emb_proj/" in name:
            want = "W8A16"
        else:
            continue
        assert prec == want, (name, la)
        seen[(op, want)] += 1
    assert seen[("Conv", "W8A16")] and seen[("Conv", "W8A8")] and seen[("MatMul", "W8A8")], seen
    # ranges: cross-validated over the 4 calibration prompts, the 16-bit tensors widened at least as much as 8-bit
    assert unet.ranges["method"] == "crossval" and len(unet.ranges["measured"]["crossval_sqnr_db"]) > 1
    assert float(unet.ranges["alpha"]["16"]) >= float(unet.ranges["alpha"]["8"]) >= 1.0
    assert m.calibration["method"] == "crossval" and m.calibration["weight_rounding"] == "gptq"
    # GPTQ rounds the int8 weights of the outermost level's linears (16-bit inputs); the FP16 graphs have none
    assert unet.weight_rounding["method"] == "gptq" and unet.weight_rounding["layers"] == unet.weight_rounding["of"] > 0
    assert m.components["text_encoder"].weight_rounding["layers"] == 0
    for c in m.components.values():
        assert c.float_vs_torch_sqnr_db > 60  # the float export itself is exact to fp32 rounding
    assert m.end_to_end["float_onnx_vs_torch_psnr_db"] > 60
    assert m.end_to_end["quantized_vs_torch_psnr_db"] > 15
    assert m.peak_rss_mb > 0 and m.timings_s["total"] > 0


def test_default_beats_w8a8_on_unet(tiny_exports):
    d = ExportManifest.load(tiny_exports["default"]).components["unet"].quant_vs_torch_sqnr_db
    w = ExportManifest.load(tiny_exports["w8a8"]).components["unet"].quant_vs_torch_sqnr_db
    assert d > w, (d, w)


def test_generate_cli_writes_png(tiny_exports, tmp_path):
    out = tmp_path / "img.png"
    res = subprocess.run([sys.executable, "-m", "edgefusion", "generate", str(tiny_exports["default"]),
                          "--prompt", "a red fox at sunset", "--seed", "3", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    img = np.asarray(Image.open(out))
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and img.std() > 0


def test_generate_matches_torch_reference_for_float_graphs(tiny_pipe, tiny_exports):
    """Same seed, scheduler and prompt: the ONNX runtime pipeline reproduces diffusers' own pipeline."""
    from edgefusion.metrics import psnr_db
    from edgefusion.runtime.pipeline import OnnxStableDiffusion, torch_reference_image

    m = ExportManifest.load(tiny_exports["default"])
    q = OnnxStableDiffusion(tiny_exports["default"])
    a = q("a bowl of ramen", seed=5)
    b = q("a bowl of ramen", seed=5)
    assert np.array_equal(a, b)  # deterministic
    ref = torch_reference_image(tiny_pipe, "a bowl of ramen", 5, m.source["sampler"]["num_inference_steps"],
                                m.source["sampler"]["guidance_scale"], 32, 32)
    assert psnr_db(ref, a) > 15


def test_export_cli_json_and_refuses_existing_folder(tmp_path):
    out = tmp_path / "exp"
    cmd = [sys.executable, "-m", "edgefusion", "export", "--model", "tiny", "--out", str(out), "--calib-prompts", "2",
           "--calib-steps", "2", "--verify-prompts", "1", "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    manifest = json.loads(res.stdout)
    assert manifest["components"]["unet"]["node_counts"]["QuantizeLinear"] > 0
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 1
    assert "already exists" in again.stderr and "--overwrite" in again.stderr
    over = subprocess.run(cmd + ["--overwrite", "--mpq-policy", "fp16"], capture_output=True, text=True, timeout=600)
    assert over.returncode == 0, over.stderr
    assert json.loads((out / "manifest.json").read_text())["policy"]["name"] == "fp16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # no staging or trash folders left


@pytest.fixture(scope="module")
def embedded_cli_export(tmp_path_factory):
    """`edgefusion export --no-progress` with every default (the embedded model), reduced calibration."""
    out = tmp_path_factory.mktemp("embedded") / "e"
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "edgefusion", "export", "--out", str(out), "--calib-prompts", "2",
                          "--calib-steps", "2", "--verify-prompts", "1", "--no-progress"],
                         capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    assert res.returncode == 0, res.stderr[-2000:]
    return ExportManifest.load(out), res, wall


def test_default_model_is_the_embedded_one_and_calibrates_on_its_own_prompts(embedded_cli_export):
    from edgefusion.calibration.prompts import read_prompts, split_prompts
    from edgefusion.models.source import resolve_model_source

    m, _, _ = embedded_cli_export
    assert m.source["kind"] == "local" and not m.source["random_weights"]
    assert m.source["prompts_file"] == "embedded/edgefusion_prompts.txt"
    own = read_prompts(resolve_model_source(None).prompts_file)
    _, held_out = split_prompts(own, 2, 1)
    assert m.end_to_end["prompt"] == held_out[0]  # the first held-out prompt of the model's own prompt file
    assert " background" in m.end_to_end["prompt"]  # an in-domain (shapes) prompt, not the generic set
    assert m.shapes["latent"] == [1, 4, 8, 8]


def test_no_progress_silences_the_libraries_loading_bars(embedded_cli_export):
    _, res, _ = embedded_cli_export
    for bar in ("it/s]", "%|", "Loading pipeline components", "Loading weights"):
        assert bar not in res.stderr, res.stderr[-2000:]


def test_the_manifest_names_the_embedded_model_not_its_install_path(embedded_cli_export):
    from edgefusion.models.source import ModelSource, embedded_model_dir

    m, _, _ = embedded_cli_export
    text = json.dumps(m.to_dict())
    assert m.source["ref"] == "embedded" and str(embedded_model_dir()) not in text and "site-packages" not in text
    back = ModelSource.from_dict(m.source)  # readers of the manifest still find the model
    assert back.ref == str(embedded_model_dir().resolve()) and (Path(back.prompts_file)).is_file()


def test_timings_cover_the_whole_run(embedded_cli_export):
    m, _, wall = embedded_cli_export
    laps = {k: v for k, v in m.timings_s.items() if k != "total"}
    assert all(v >= 0 for v in laps.values()) and sum(laps.values()) == pytest.approx(m.timings_s["total"], abs=0.05)
    # the run's own clock starts after interpreter start-up and the CLI's imports (a few seconds at most)
    assert m.timings_s["total"] <= wall and m.timings_s["total"] >= 0.75 * wall, (m.timings_s, wall)
    # in-vocabulary prompts, a policy whose rules all match: at most the fidelity check warns (2 x 2 calibration)
    assert m.strict is False and all("check image" in w for w in m.warnings), m.warnings


def test_default_output_folders_are_git_ignored():
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("edgefusion-export/embedded-default/manifest.json", "edgefusion-profile/embedded/sensitivity.json"):
        res = subprocess.run(["git", "check-ignore", "-q", path], cwd=root)
        assert res.returncode == 0, path


def test_generate_on_a_folder_that_is_not_an_export_fails_before_loading_anything(tmp_path):
    code = ("import sys\nfrom edgefusion.cli.main import main\n"
            f"rc = main(['generate', {str(tmp_path)!r}, '--prompt', 'a cat'])\n"
            "print(rc, any(m in sys.modules for m in ('torch', 'diffusers', 'transformers', 'onnxruntime')))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "1 False", (res.stdout, res.stderr)
    assert "has no manifest.json" in res.stderr
