"""The ``export`` verb: model -> calibration -> float ONNX (verified) -> QDQ graphs (verified) -> export folder."""

from __future__ import annotations

import gc
import json
import resource
import shutil
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx

from edgefusion import __version__
from edgefusion.errors import EdgeFusionError
from edgefusion.export.atomic import atomic_dir, check_output_dir
from edgefusion.export.manifest import ComponentRecord, ExportManifest

COMPONENT_ORDER = ("text_encoder", "unet", "vae_decoder")
SUPPORTED_DEVICES = ("exynos2400",)  # device profiles and the latency model arrive with their own issue


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _versions() -> dict[str, str]:
    import diffusers
    import onnxruntime
    import torch
    import transformers

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__}


def _bytes_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def default_out_dir(model: str, policy: str) -> Path:
    """``./edgefusion-export/<model>-<policy>`` (names made filesystem-safe)."""
    def safe(s: str) -> str:
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(s).name or s)
    return Path("edgefusion-export") / f"{safe(model)}-{safe(Path(policy).stem)}"


def export(model: str | None = None, mpq_policy: str = "default", device: str = "exynos2400",
           out: str | Path | None = None, overwrite: bool = False, calib_prompts: int = 8,
           calib_steps: int | None = None, verify_prompts: int = 2, prompts_file: str | None = None,
           seed: int = 0, allow_pickle: bool = False, keep_float: bool = False,
           progress: bool = True) -> ExportManifest:
    """Export and quantize a Stable Diffusion model for ``device``; returns the manifest of the written folder.

    Every argument maps to one CLI flag of ``edgefusion export``. All inputs are checked before heavy work starts,
    and the folder appears only when everything (including verification) succeeded.
    """
    from edgefusion.calibration.prompts import read_prompts, split_prompts
    from edgefusion.models.source import DEFAULT_MODEL, resolve_model_source
    from edgefusion.quant.policy import load_policy

    t_start = time.perf_counter()
    source = resolve_model_source(model)
    spec = load_policy(mpq_policy)
    if device not in SUPPORTED_DEVICES:
        raise EdgeFusionError(f"unknown device '{device}'", f"use one of {', '.join(SUPPORTED_DEVICES)}")
    prompts = read_prompts(prompts_file)
    cal_prompts, ver_prompts = split_prompts(prompts, calib_prompts, verify_prompts)
    out = Path(out) if out else default_out_dir(model or DEFAULT_MODEL, mpq_policy)
    check_output_dir(out, overwrite)
    sampler = source.sampler
    steps = calib_steps or sampler.num_inference_steps
    if steps < 1 or verify_prompts < 1:
        raise EdgeFusionError("calibration steps and verification prompts must be at least 1",
                              "pass --calib-steps N and --verify-prompts N with N >= 1")

    with atomic_dir(out, overwrite) as stage:
        return _export_into(stage, out, source, spec, device, cal_prompts, ver_prompts, steps, seed,
                            allow_pickle, keep_float, progress, t_start)


def _export_into(stage: Path, out: Path, source, spec, device, cal_prompts, ver_prompts, steps, seed, allow_pickle,
                 keep_float, progress, t_start) -> ExportManifest:
    from transformers.utils import logging as hf_logging

    from edgefusion.calibration.capture import capture_calibration
    from edgefusion.export.torch_to_onnx import component_module, export_component, run_torch
    from edgefusion.metrics import mean_sqnr_db, psnr_db
    from edgefusion.models.source import load_pipeline
    from edgefusion.quant.quantize_graph import quantize_graph
    from edgefusion.runtime.pipeline import OnnxStableDiffusion, save_png, torch_reference_image
    from edgefusion.runtime.session import open_session, run_session

    hf_logging.set_verbosity_error()
    from diffusers.utils import logging as df_logging

    df_logging.set_verbosity_error()
    timings: dict[str, float] = {}
    tick = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        timings[name] = round(now - tick, 3)
        tick = now

    sampler = source.sampler
    pipe = load_pipeline(source, allow_pickle=allow_pickle, quiet=False)
    lap("load_model")
    gs, h, w = sampler.guidance_scale, sampler.height, sampler.width
    cal = capture_calibration(pipe, cal_prompts, steps, gs, h, w, seed=seed, progress=progress)
    ver = capture_calibration(pipe, ver_prompts, steps, gs, h, w, seed=seed + 10_000, progress=progress,
                              desc="verification")
    lap("calibration")
    ref_prompt, ref_seed = ver_prompts[0], seed + 10_000
    # the end-to-end check samples with the calibration step count (the regime the graphs were calibrated for)
    ref_image = torch_reference_image(pipe, ref_prompt, ref_seed, steps, gs, h, w)
    lap("torch_reference_image")
    latent_shape = list(cal.samples["vae_decoder"][0].inputs["latent_sample"].shape)
    scaling = float(pipe.vae.config.scaling_factor)
    pipe.tokenizer.save_pretrained(str(stage / "tokenizer"))
    pipe.scheduler.save_pretrained(str(stage / "scheduler"))

    float_dir = stage / "float"
    refs: dict[str, list[np.ndarray]] = {}
    for comp in COMPONENT_ORDER:
        module = component_module(pipe, comp)
        refs[comp] = [run_torch(module, comp, s.inputs) for s in ver.samples[comp]]
        export_component(pipe, comp, cal.samples[comp][0].inputs, float_dir / comp / "model.onnx")
        del module
        setattr(pipe, {"text_encoder": "text_encoder", "unet": "unet", "vae_decoder": "vae"}[comp], None)
        gc.collect()
        lap(f"export_{comp}")
    del pipe
    gc.collect()

    records: dict[str, ComponentRecord] = {}
    for comp in COMPONENT_ORDER:
        fpath = float_dir / comp / "model.onnx"
        sess = open_session(fpath)
        float_out = [run_session(sess, s.inputs)[0] for s in ver.samples[comp]]
        del sess
        f_vs_t = mean_sqnr_db(refs[comp], float_out)
        qg = quantize_graph(fpath, stage / comp / "model.onnx", comp, spec,
                            (s.inputs for s in cal.samples[comp]), progress=progress)
        sess = open_session(qg.path)
        q_out = [run_session(sess, s.inputs)[0] for s in ver.samples[comp]]
        del sess
        qmodel = onnx.load(str(qg.path), load_external_data=False)
        nodes = Counter(n.op_type for n in qmodel.graph.node)
        del qmodel
        records[comp] = ComponentRecord(
            file=f"{comp}/model.onnx", bytes=_bytes_of(qg.path), layers=qg.resolved.counts(), plan=qg.plan.summary(),
            node_counts={k: nodes.get(k, 0) for k in ("QuantizeLinear", "DequantizeLinear", "Cast")},
            qdq_by_op_type=qg.qdq_by_op_type(), float_vs_torch_sqnr_db=round(f_vs_t, 2),
            quant_vs_torch_sqnr_db=round(mean_sqnr_db(refs[comp], q_out), 2),
            quant_vs_float_sqnr_db=round(mean_sqnr_db(float_out, q_out), 2), verify_samples=len(q_out))
        qg.resolved.save(stage / comp / "precisions.json")
        lap(f"quantize_{comp}")

    manifest = ExportManifest(
        edgefusion_version=__version__, versions=_versions(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), source=source.to_dict(),
        policy=spec.to_dict(), device=device,
        calibration={"prompts": len(cal_prompts), "steps": steps, "guidance_scale": gs,
                     "samples": cal.count(), "digest": cal.digest(), "verify_prompts": len(ver_prompts),
                     "seed": seed},
        shapes={"latent": latent_shape, "vae_scaling_factor": scaling, "height": h, "width": w},
        components=records,
        notes=["latency estimate: not computed (the emulated NPU latency model is not implemented yet)"])
    if source.random_weights:
        manifest.notes.append("RANDOM weights (architecture preset): fidelity figures do not predict a trained model")
    manifest.save(stage / "manifest.json")
    (stage / "policy.yaml").write_text(spec.to_yaml())

    float_graphs = {c: float_dir / c / "model.onnx" for c in COMPONENT_ORDER}
    float_image = OnnxStableDiffusion(stage, graphs=float_graphs)(ref_prompt, seed=ref_seed, steps=steps)
    quant_image = OnnxStableDiffusion(stage)(ref_prompt, seed=ref_seed, steps=steps)
    save_png(ref_image, stage / "verify_torch_float.png")
    save_png(quant_image, stage / "verify_quantized.png")
    manifest.end_to_end = {"prompt": ref_prompt, "seed": ref_seed, "steps": steps,
                           "float_onnx_vs_torch_psnr_db": round(psnr_db(ref_image, float_image), 2),
                           "quantized_vs_torch_psnr_db": round(psnr_db(ref_image, quant_image), 2)}
    lap("end_to_end_check")
    if not keep_float:
        shutil.rmtree(float_dir)
    _write_model_index(stage)
    manifest.timings_s = dict(timings, total=round(time.perf_counter() - t_start, 3))
    manifest.peak_rss_mb = round(_peak_rss_mb(), 1)
    manifest.save(stage / "manifest.json")
    return manifest


def _write_model_index(stage: Path) -> None:
    """optimum-style ``model_index.json`` naming the sub-folders (for tools that look for one)."""
    index = {"_class_name": "ORTStableDiffusionPipeline", "_edgefusion": True,
             "text_encoder": ["onnx", "model.onnx"], "unet": ["onnx", "model.onnx"],
             "vae_decoder": ["onnx", "model.onnx"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "scheduler": ["diffusers", json.loads((stage / "scheduler" / "scheduler_config.json").read_text())
                           ["_class_name"]]}
    (stage / "model_index.json").write_text(json.dumps(index, indent=1) + "\n")
