"""Evaluation end to end on the tiny preset's exports: the script, metrics against the PyTorch float pipeline,
shards + merge, the HTML report in a headless browser, and bad input."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from eval_weights import reference_stats, tiny_clip, tiny_feature_net
from PIL import Image

from edgefusion.errors import EdgeFusionError
from edgefusion.evaluation.latency_view import format_latency, read_latency
from edgefusion.evaluation.merge import merge_shards
from edgefusion.evaluation.options import MetricOptions
from edgefusion.evaluation.prompts import read_prompt_file
from edgefusion.evaluation.results import EvalResult
from edgefusion.evaluation.run import evaluate
from edgefusion.evaluation.shard import parse_shard

ROOT = Path(__file__).resolve().parents[1]
SEED = 11
PROMPTS = ["a red fox at sunset", "", "a large red circle in the center on a white background", "a bowl of ramen",
           "an astronaut riding a horse"]


@pytest.fixture(scope="module")
def eval_exports(tiny_exports, tiny_float_graphs, tmp_path_factory):
    """The tiny `default` export plus the float graphs `--keep-float` would have kept (the same seeded preset's float
    ONNX export, from the session fixture: saves a third export), and the tiny `w8a8` export."""
    kept = tmp_path_factory.mktemp("evalexp") / "default-keep-float"
    shutil.copytree(tiny_exports["default"], kept)
    for comp, graph in tiny_float_graphs.items():
        shutil.copytree(graph.parent, kept / "float" / comp)
    return {"default": kept, "w8a8": tiny_exports["w8a8"]}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    return {"clip": tiny_clip(root / "clip"), "net": tiny_feature_net(root / "net.pt"),
            "stats": reference_stats(root / "coco_stats.npz")}


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    f = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    f.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    return f


def _metric_args(weights) -> list[str]:
    return ["--clip-model", str(weights["clip"]), "--fid-inception", str(weights["net"]), "--fid-ref-stats",
            str(weights["stats"])]


@pytest.fixture(scope="module")
def whole_run(eval_exports, weights, prompt_file, tmp_path_factory):
    """`eval/evaluate.py` over both exports, all metrics, the whole prompt set."""
    out = tmp_path_factory.mktemp("runs") / "whole"
    res = subprocess.run([sys.executable, "eval/evaluate.py", str(eval_exports["default"]), str(eval_exports["w8a8"]),
                          "--prompts", str(prompt_file), "--out", str(out), "--seed", str(SEED), "--json",
                          *_metric_args(weights)], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, json.loads(res.stdout)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"eval_{name}", ROOT / "eval" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_whole_run_against_the_pytorch_float_pipeline(whole_run, tiny_pipe):
    from edgefusion.runtime.pipeline import torch_reference_image

    out, printed = whole_run
    r = EvalResult.load(out)
    assert EvalResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert printed["summary"] == r.to_dict()["summary"]
    assert [v.key for v in r.spec.variants] == ["torch-float", "onnx-float", "default", "w8a8"]
    assert any("1 blank line" in n for n in r.notes)
    steps, gs = r.spec.steps, r.spec.guidance_scale
    assert steps == tiny_pipe_steps() and len(r.spec.timesteps) == steps
    texts = [p for p in PROMPTS if p]
    for key, recs in r.records.items():
        assert [(x.prompt_index, x.seed) for x in recs] == [(k, SEED + k) for k in range(4)], key
        assert all(0 <= x.clip_score <= 100 for x in recs)
        # only the shapes caption is scored for attributes
        assert [x.attributes is not None for x in recs] == [False, True, False, False]
    # the reference column is diffusers' own pipeline with the same seeds
    for rec in r.records["torch-float"]:
        ref = torch_reference_image(tiny_pipe, texts[rec.prompt_index], rec.seed, steps, gs, 32, 32)
        png = np.asarray(Image.open(out / rec.image)).astype(np.int16)
        assert np.abs(png - np.round(ref * 255)).max() <= 1
    # float ONNX reproduces it at every step; quantized exports do not
    for rec in r.records["onnx-float"]:
        assert rec.psnr_db > 60 and rec.ssim > 0.999
        assert len(rec.noise_sqnr_db) == steps and min(rec.noise_sqnr_db) > 60 and min(rec.latent_psnr_db) > 60
    worst_float = min(x.psnr_db for x in r.records["onnx-float"])
    for key in ("default", "w8a8"):
        for rec in r.records[key]:
            assert np.isfinite(rec.psnr_db) and rec.psnr_db < worst_float and rec.ssim < 1
            assert len(rec.noise_sqnr_db) == steps and max(rec.noise_sqnr_db) < 60
    s = r.summary
    assert abs(s["onnx-float"]["fid_vs_float"]) < 1e-3 * min(s["default"]["fid_vs_float"], s["w8a8"]["fid_vs_float"])
    assert all(np.isfinite(s[k]["fid"]) and s[k]["fid_images"] == 4 for k in s)
    assert s["default"]["attribute_images"] == 1 and s["torch-float"]["psnr_db"] is None
    assert s["w8a8"]["psnr_db"] == pytest.approx(np.mean([x.psnr_db for x in r.records["w8a8"]]))
    assert s["default"]["noise_sqnr_db_per_step"] == pytest.approx(
        np.mean([x.noise_sqnr_db for x in r.records["default"]], axis=0).tolist())


def tiny_pipe_steps() -> int:
    from edgefusion.models.presets import load_preset_config

    return load_preset_config("tiny")["sampler"]["num_inference_steps"]


def _chromium() -> str | None:
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def _selfcheck(report: Path, tmp_path: Path) -> dict:
    browser = _chromium()
    if browser is None:
        if os.environ.get("EDGEFUSION_REQUIRE_BROWSER") == "1":
            pytest.fail("EDGEFUSION_REQUIRE_BROWSER=1 but no chromium is installed (apt-get install chromium)")
        pytest.skip("no chromium on this machine (apt-get install chromium); CI installs it and requires it")
    res = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
                          report.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    m = re.search(r'<pre id="selfcheck" data-state="(\w+)">([^<]*)</pre>', res.stdout)
    assert m, (res.returncode, res.stdout[-500:], res.stderr[-1500:])
    return {"state": m.group(1), **json.loads(m.group(2))}


def test_report_renders_in_a_headless_browser(whole_run, eval_exports, tmp_path):
    out, _ = whole_run
    html = (out / "report.html").read_text(encoding="utf-8")
    for table in ('id="metrics"', 'id="latency"', 'id="grid"'):
        assert table in html
    for name in ("default", "w8a8"):
        lat = read_latency(json.loads((eval_exports[name] / "manifest.json").read_text()))
        assert format_latency(lat) in html
    check = _selfcheck(out / "report.html", tmp_path)
    assert check["state"] == "ok" and check["broken"] == []
    assert check["images"] == 4 * 4 + 2  # grid (4 prompts x 4 variants) + 2 per-step plots
    assert check["metric_rows"] == 4 and check["grid_rows"] == 4
    # the check can fail: a missing image is reported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "images" / "w8a8" / "00002.png").unlink()
    broken = _selfcheck(copy / "report.html", tmp_path)
    assert broken["state"] == "broken" and broken["broken"] == ["images/w8a8/00002.png"]


def test_shards_merge_into_the_whole_run(whole_run, eval_exports, weights, prompt_file, tmp_path):
    out, _ = whole_run
    whole = EvalResult.load(out)
    prompts = read_prompt_file(prompt_file)
    metrics = MetricOptions(clip_model=weights["clip"], fid_inception=weights["net"], fid_ref_stats=weights["stats"])
    exports = [eval_exports["default"], eval_exports["w8a8"]]
    for i in (1, 2):
        evaluate(exports, prompts, tmp_path / f"s{i}", shard=parse_shard(f"{i}/2"), seed=SEED, metrics=metrics,
                 progress=False)
    assert len(EvalResult.load(tmp_path / "s1").records["w8a8"]) == 2
    merged = merge_shards([tmp_path / "s2", tmp_path / "s1"], tmp_path / "merged")
    assert merged.complete and merged.shards == [1, 2]
    assert merged.records == whole.records  # same images, same per-image and per-step figures
    for key, s in whole.summary.items():
        for metric in ("psnr_db", "ssim", "clip_score", "fid", "fid_vs_float", "noise_sqnr_db_mean"):
            got = merged.summary[key][metric]
            assert got == s[metric] if s[metric] is None else got == pytest.approx(s[metric], rel=1e-6, abs=1e-9)
    for rec in merged.records["default"]:
        assert (tmp_path / "merged" / rec.image).is_file()
    # merge refusals: a shard twice, a shard missing, a different run
    with pytest.raises(EdgeFusionError, match="is in both"):
        merge_shards([tmp_path / "s1", tmp_path / "s1"], tmp_path / "m2")
    with pytest.raises(EdgeFusionError, match=r"shard\(s\) 2/2 missing.*--shard 2/2"):
        merge_shards([tmp_path / "s1"], tmp_path / "m3")
    partial = merge_shards([tmp_path / "s1"], tmp_path / "m4", allow_partial=True)
    assert not partial.complete and "PARTIAL" in (tmp_path / "m4" / "report.html").read_text()
    shutil.copytree(tmp_path / "s2", tmp_path / "other")  # shard 2 of a run with another seed
    other = json.loads((tmp_path / "other" / "results.json").read_text())
    other["spec"]["seed"] += 1
    (tmp_path / "other" / "results.json").write_text(json.dumps(other))
    with pytest.raises(EdgeFusionError, match="its seed differs"):
        merge_shards([tmp_path / "s1", tmp_path / "other"], tmp_path / "m5")
    assert not any((tmp_path / m).exists() for m in ("m2", "m3", "m5"))


def _no_leftovers(folder: Path) -> None:
    assert not [p for p in folder.iterdir() if ".partial-" in p.name]


def test_exports_of_different_models_are_refused(eval_exports, prompt_file, tmp_path):
    other = tmp_path / "other-model"
    shutil.copytree(eval_exports["w8a8"], other, ignore=shutil.ignore_patterns("*.onnx.data"))
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["source"]["ref"] = "sd-v1.5"
    (other / "manifest.json").write_text(json.dumps(manifest))
    prompts = read_prompt_file(prompt_file)
    with pytest.raises(EdgeFusionError) as err:
        evaluate([eval_exports["default"], other], prompts, tmp_path / "out", progress=False)
    msg = str(err.value)
    assert "different models" in msg and str(other) in msg and "preset tiny" in msg and "sd-v1.5" in msg
    manifest["source"]["ref"] = "tiny"
    manifest["shapes"]["latent"] = [1, 4, 8, 8]
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgeFusionError, match="different shapes"):
        evaluate([eval_exports["default"], other], prompts, tmp_path / "out", progress=False)
    with pytest.raises(EdgeFusionError, match="given twice"):
        evaluate([eval_exports["w8a8"], eval_exports["w8a8"]], prompts, tmp_path / "out", progress=False)
    with pytest.raises(EdgeFusionError, match="no manifest.json"):
        evaluate([tmp_path], prompts, tmp_path / "out", progress=False)
    with pytest.raises(EdgeFusionError, match="holds no prompts"):
        evaluate([eval_exports["w8a8"]], prompts, tmp_path / "out", shard=parse_shard("5/5"), progress=False)
    assert not (tmp_path / "out").exists()
    _no_leftovers(tmp_path)


def test_script_bad_input_exits_1_with_one_line(eval_exports, prompt_file, tmp_path, capsys):
    evaluate_script = _script("evaluate")
    base = [str(eval_exports["w8a8"]), "--prompts", str(prompt_file), "--out", str(tmp_path / "out")]
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("a red fox\ncaf\xe9\n".encode("latin-1"))
    cases = [(["--shard", "3/2"], "3/2"), (["--clip-score"], "--clip-model"),
             (["--fid-inception", str(tmp_path / "inception-2015-12-05.pt")], "inception-2015-12-05.pt"),
             (["--protocol", "coco"], "--clip-model"), (["--prompts", str(latin)], "line 2"),
             (["--steps", "0"], "--steps 1")]
    for extra, needle in cases:
        assert evaluate_script.main(base + extra) == 1, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("evaluate: error:") and needle in err and "\n" not in err, (extra, err)
    assert not (tmp_path / "out").exists()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("keep me")
    assert evaluate_script.main(base) == 1 and "already exists" in capsys.readouterr().err
    assert evaluate_script.main(base + ["--overwrite"]) == 1 and "no results.json" in capsys.readouterr().err
    assert (tmp_path / "out" / "x").read_text() == "keep me"
    res = subprocess.run([sys.executable, "eval/merge_shards.py", str(tmp_path / "out"), "--out", str(tmp_path / "m")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "not an edgefusion evaluation" in res.stderr


@pytest.mark.slow
def test_compare_policies_exports_and_evaluates_in_one_run(tmp_path, prompt_file):
    """The README table's script on the tiny preset (two exports: about a minute on 2 cores)."""
    from edgefusion.evaluation.compare import compare_policies

    result, info = compare_policies(tmp_path / "cmp", model="tiny", policies=("default", "fp16"),
                                    prompts=str(prompt_file), calib_prompts=1, calib_steps=1, verify_prompts=1,
                                    progress=False)
    out = tmp_path / "cmp"
    assert json.loads((out / "compare.json").read_text())["table"] == info["table"]
    assert (out / "exports" / "default" / "float" / "unet" / "model.onnx").is_file()  # the float ONNX column
    assert not (out / "exports" / "fp16" / "float").exists()
    assert [v.key for v in result.spec.variants] == ["torch-float", "onnx-float", "default", "fp16"]
    s = result.summary
    assert s["fp16"]["psnr_db"] > s["default"]["psnr_db"] and s["onnx-float"]["psnr_db"] > s["fp16"]["psnr_db"]
    assert "| `fp16` |" in info["table"] and info["wall_s"]["total"] > 0
    assert EvalResult.load(out / "evaluation").records == result.records
