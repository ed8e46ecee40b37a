"""The ``export`` verb: model -> calibration -> float ONNX (verified) -> QDQ graphs (verified) -> export folder."""

from __future__ import annotations

import gc
import resource
import shutil
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx

from edgefusion import __version__, diagnostics
from edgefusion.errors import EdgeFusionError
from edgefusion.export.atomic import atomic_dir
from edgefusion.export.manifest import ComponentRecord, ExportManifest

COMPONENT_ORDER = ("text_encoder", "unet", "vae_decoder")
# the NPU graph's file per component; the UNet's <unet>/model.onnx is the batch-dynamic client graph around it
NPU_FILE = {"text_encoder": "model.onnx", "unet": "npu.onnx", "vae_decoder": "model.onnx"}
TILING_ACCURACY_DB = 0.1  # a tiled graph not identical to float rounding must be this close in SQNR vs PyTorch


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "onnx", "onnxruntime", "diffusers", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


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
           progress: bool = True, tiling: bool = True, max_graph_mb: float | None = None,
           target_sqnr: float | None = None, latency_budget_ms: float | None = None,
           sensitivity: str | None = None, calibration_method: str | None = None,
           strict: bool = False, backend: str = "auto", htp_samples: int = 4,
           executor=None, weight_rounding: str = "gptq") -> ExportManifest:
    """Export and quantize a Stable Diffusion model for ``device``; returns the manifest of the written folder.

    Every argument maps to one CLI flag of ``edgefusion export``. All inputs are checked before heavy work starts,
    and the folder appears only when everything (including verification) succeeded. Warnings (a failed fidelity
    check of :mod:`edgefusion.export.fidelity_check`, a policy rule that matches no layer, a prompt the tokenizer
    cuts) are printed and recorded in the manifest; ``strict`` makes each of them an error
    (:mod:`edgefusion.diagnostics`).
    ``backend``: ``qnn`` compiles every graph for the Snapdragon HTP (``edgefusion[qnn]``), ``auto`` does so when
    the device is a Snapdragon and the extra is installed, ``emulated`` never; ``htp_samples`` verification inputs
    run on the emulated HTP. ``executor`` (an :class:`~edgefusion.executors.spec.ExecutorSpec`): where ``auto``'s
    profiling step runs. ``weight_rounding``: ``gptq`` (int8 weights of linear layers behind 16-bit inputs rounded
    against their calibration inputs, :mod:`edgefusion.quant.weight_rounding`) or ``nearest``.
    """
    from edgefusion.calibration.prompts import read_prompts, split_prompts
    from edgefusion.models.source import DEFAULT_MODEL, resolve_model_source

    t_start = time.perf_counter()
    source = resolve_model_source(model)
    if source.kind == "local":
        from edgefusion.models.source import check_weights_format

        check_weights_format(Path(source.ref), allow_pickle)
    from edgefusion.sensitivity.auto_export import policy_or_auto

    spec = policy_or_auto(mpq_policy, target_sqnr, latency_budget_ms, sensitivity,
                          executor)  # auto: chosen after calibration
    from edgefusion.latency.device import load_device

    profile = load_device(device)  # a name or a YAML path; validated before any heavy work
    from edgefusion.export.qnn_stage import qnn_requested

    run_qnn, qnn_note = qnn_requested(backend, profile.name)
    if htp_samples < 1:
        raise EdgeFusionError(f"--htp-samples must be at least 1, got {htp_samples}", "pass e.g. --htp-samples 4")
    if max_graph_mb is not None:
        if not max_graph_mb > 0 or max_graph_mb == float("inf"):
            raise EdgeFusionError(f"--max-graph-mb must be positive, got {max_graph_mb}", "pass e.g. 2048")
        profile = profile.with_overrides(max_graph_weight_mb=max_graph_mb)
    prompts = read_prompts(prompts_file or source.prompts_file)
    cal_prompts, ver_prompts = split_prompts(prompts, calib_prompts, verify_prompts)
    out = Path(out) if out else default_out_dir(model or DEFAULT_MODEL, mpq_policy)
    sampler = source.sampler
    steps = sampler.num_inference_steps if calib_steps is None else calib_steps
    if steps < 1 or verify_prompts < 1:
        raise EdgeFusionError("calibration steps and verification prompts must be at least 1",
                              "pass --calib-steps N and --verify-prompts N with N >= 1")

    from edgefusion.quant.range_methods import resolve_method

    method = resolve_method(calibration_method, len(cal_prompts))  # one-line error when it needs more prompts
    from edgefusion.quant.weight_rounding import WEIGHT_ROUNDING

    if weight_rounding not in WEIGHT_ROUNDING:
        raise EdgeFusionError(f"unknown weight rounding '{weight_rounding}'",
                              f"pass --weight-rounding {' | '.join(WEIGHT_ROUNDING)}")
    with diagnostics.session(strict), atomic_dir(out, overwrite) as stage:
        return _export_into(stage, source, spec, profile, cal_prompts, ver_prompts, steps, seed,
                            allow_pickle, keep_float, progress, t_start, tiling, method.name,
                            (run_qnn, qnn_note, htp_samples), weight_rounding)


def _export_into(stage: Path, source, spec, profile, cal_prompts, ver_prompts, steps, seed, allow_pickle,
                 keep_float, progress, t_start, tiling, method, qnn=(False, None, 4),
                 weight_rounding: str = "gptq") -> ExportManifest:
    from edgefusion.isolated import run_isolated

    work = stage / ".work"
    work.mkdir()
    t_info, t_rss = run_isolated(_torch_stage, str(stage), source.to_dict(), cal_prompts, ver_prompts, steps, seed,
                                 allow_pickle, progress, scratch=work)
    laps, extra_rss = {}, {}  # the orchestrator's own steps (timings) and processes (peak RSS) besides the two stages
    if hasattr(spec, "choose"):  # --mpq-policy auto: from the UNet's sensitivity on this calibration set
        request, t_auto = spec, time.perf_counter()
        spec = request.choose(stage, source.to_dict(), t_info["shapes"], seed, progress, profile.to_dict(), tiling,
                              method)
        laps["auto_policy"], extra_rss["auto_policy_stage"] = time.perf_counter() - t_auto, request.peak_rss_mb
    manifest = ExportManifest(
        edgefusion_version=__version__, versions=_versions(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), source=source.to_dict(),
        policy=spec.to_dict(), device=profile.name,
        calibration={"prompts": len(cal_prompts), "steps": steps, "guidance_scale": source.sampler.guidance_scale,
                     "samples": t_info["samples"], "digest": t_info["digest"], "verify_prompts": len(ver_prompts),
                     "seed": seed, "method": method, "weight_rounding": weight_rounding},
        shapes=t_info["shapes"])
    if source.random_weights:
        manifest.notes.append("RANDOM weights (architecture preset): fidelity figures do not predict a trained model")
    manifest.save(stage / "manifest.json")  # the runtime pipeline of the next stage reads it
    (stage / "policy.yaml").write_text(spec.to_yaml())
    from edgefusion.export.policy_check import check_rules_match

    check_rules_match(spec, {c: stage / "float" / c / "model.onnx" for c in COMPONENT_ORDER})
    o_info, o_rss = run_isolated(_onnx_stage, str(stage), spec.to_dict(), t_info["reference"], steps, progress,
                                 profile.to_dict(), tiling, method, weight_rounding, scratch=work)
    manifest.components = {c: ComponentRecord(**r) for c, r in o_info["components"].items()}
    manifest.end_to_end = o_info["end_to_end"]
    for w in o_info["warnings"]:  # failed fidelity checks: printed and recorded, errors under --strict
        diagnostics.warn(w, "raise the precision where the error comes from, e.g. --mpq-policy auto --target-sqnr 41 "
                            "(the profiler picks the layers; the README's fidelity section), or export without "
                            "--strict to keep the folder")
    manifest.tiling = {"enabled": tiling, "sites": o_info["tiling"]}
    run_qnn, qnn_note, htp_samples = qnn
    if run_qnn:  # in its own process: the QNN libraries and the emulator's memory go away with it
        from edgefusion.export.qnn_stage import qnn_stage

        manifest.save(stage / "manifest.json")  # it reads the graph files recorded there
        t_qnn = time.perf_counter()
        manifest.qnn, extra_rss["qnn_stage"] = run_isolated(qnn_stage, str(stage), profile.name, htp_samples,
                                                            scratch=work)
        laps["qnn_stage"] = time.perf_counter() - t_qnn
    elif qnn_note:
        manifest.qnn = {"skipped": qnn_note}
        manifest.notes.append(qnn_note)
    shutil.rmtree(work)
    if not keep_float:
        shutil.rmtree(stage / "float")
    from edgefusion.export.client_folder import write_model_index

    write_model_index(stage)
    manifest.save(stage / "manifest.json")
    from edgefusion.deploy.estimate import estimate_export

    t_latency = time.perf_counter()
    report = estimate_export(stage, device=_device_ref(profile, stage), backend="emulated")
    report.save(stage / "latency.json")
    manifest.latency = report.summary()
    laps["latency_estimate"] = time.perf_counter() - t_latency
    manifest.timings_s = _whole_run_timings({**t_info["timings"], **o_info["timings"], **laps}, t_start)
    manifest.peak_rss_after_stage_mb = {"torch_stage": round(t_rss, 1), "onnx_stage": round(o_rss, 1),
                                        "orchestrator": round(_peak_rss_mb(), 1)}
    manifest.peak_rss_after_stage_mb.update({k: round(v, 1) for k, v in extra_rss.items()})
    manifest.peak_rss_mb = max(manifest.peak_rss_after_stage_mb.values())
    manifest.warnings, manifest.strict = diagnostics.recorded(), diagnostics.strict()
    manifest.save(stage / "manifest.json")
    return manifest


def _whole_run_timings(laps: dict[str, float], t_start: float) -> dict[str, float]:
    """Timings that add up to the whole run: the stages' own laps, the orchestrator's steps (automatic policy,
    QNN stage, latency estimate), and ``startup_and_io`` for the rest (process start-up and imports, checks, file
    moves)."""
    laps = {k: round(v, 3) for k, v in laps.items()}
    total = round(time.perf_counter() - t_start, 3)
    return {**laps, "startup_and_io": round(max(total - sum(laps.values()), 0.0), 3), "total": total}


class _Laps:
    """Wall time per named step."""

    def __init__(self):
        self.timings: dict[str, float] = {}
        self.tick = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.tick, 3)
        self.tick = now


def _torch_stage(stage: str, source: dict, cal_prompts, ver_prompts, steps, seed, allow_pickle, progress) -> dict:
    """Float PyTorch work (own process): calibration, references, tokenizer/scheduler, float ONNX graphs."""
    from edgefusion.calibration.capture import capture_calibration
    from edgefusion.models.source import ModelSource, load_pipeline
    from edgefusion.models.torch_to_onnx import component_module, export_component, quiet_hf_logging, run_torch
    from edgefusion.runtime.pipeline import torch_reference_image

    quiet_hf_logging()
    stage_dir, lap = Path(stage), _Laps()
    src = ModelSource.from_dict(source)
    pipe = load_pipeline(src, allow_pickle=allow_pickle, quiet=False, progress=progress)
    lap("load_model")
    if not src.random_weights:  # a preset's tokenizer is a character-level stand-in: every word is "split"
        from edgefusion.models.tokenizer import warn_prompt_fit

        warn_prompt_fit(pipe.tokenizer, list(cal_prompts) + list(ver_prompts), "calibration/verification prompts")
    gs, h, w = src.sampler.guidance_scale, src.sampler.height, src.sampler.width
    cal = capture_calibration(pipe, cal_prompts, steps, gs, h, w, seed=seed, progress=progress)
    ver = capture_calibration(pipe, ver_prompts, steps, gs, h, w, seed=seed + 10_000, progress=progress,
                              desc="verification")
    cal.save(stage_dir / ".work" / "cal")
    ver.save(stage_dir / ".work" / "ver")
    lap("calibration")
    ref_prompt, ref_seed = ver_prompts[0], seed + 10_000
    # the end-to-end check samples with the calibration step count (the regime the graphs were calibrated for)
    np.save(stage_dir / ".work" / "ref_image.npy", torch_reference_image(pipe, ref_prompt, ref_seed, steps, gs, h, w))
    lap("torch_reference_image")
    pipe.tokenizer.save_pretrained(str(stage_dir / "tokenizer"))
    pipe.scheduler.save_pretrained(str(stage_dir / "scheduler"))
    from edgefusion.export.client_folder import write_component_configs, write_slow_tokenizer_files

    write_slow_tokenizer_files(pipe.tokenizer, stage_dir / "tokenizer")  # the slow CLIPTokenizer reads only these
    write_component_configs(pipe, stage_dir)  # optimum's ORT models require <component>/config.json
    shapes = {"latent": list(cal.samples["vae_decoder"][0].inputs["latent_sample"].shape),
              "vae_scaling_factor": float(pipe.vae.config.scaling_factor), "height": h, "width": w}
    refs = {}
    for comp in COMPONENT_ORDER:
        module = component_module(pipe, comp)
        for i, s in enumerate(ver.samples[comp]):
            refs[f"{comp}/{i}"] = run_torch(module, comp, s.inputs)
        export_component(pipe, comp, cal.samples[comp][0].inputs, stage_dir / "float" / comp / "model.onnx")
        del module
        setattr(pipe, {"text_encoder": "text_encoder", "unet": "unet", "vae_decoder": "vae"}[comp], None)
        gc.collect()
        lap(f"export_{comp}")
    np.savez(stage_dir / ".work" / "refs.npz", **refs)
    return {"timings": lap.timings, "samples": cal.count(), "digest": cal.digest(), "shapes": shapes,
            "reference": {"prompt": ref_prompt, "seed": ref_seed}}


def _device_ref(profile, stage: Path) -> str:
    """The profile as ``estimate_export`` takes it: a shipped name, or a copy saved into the export folder."""
    from edgefusion.latency.device import device_names, load_device

    if profile.name in device_names() and load_device(profile.name).to_dict() == profile.to_dict():
        return profile.name
    path = stage / "device.json"
    profile.save(path)
    return str(path)


def _onnx_stage(stage: str, spec: dict, reference: dict, steps: int, progress: bool,
                device: dict, tile: bool, method: str, weight_rounding: str = "gptq") -> dict:
    """onnxruntime work (own process, no torch model): verify float graphs, quantize, verify, end-to-end image."""
    from edgefusion.calibration.capture import CalibrationSet
    from edgefusion.deploy.tiling import tile_graph_file
    from edgefusion.export.client_graph import (client_check_problem, make_self_contained, verify_client_graph,
                                                write_client_graph)
    from edgefusion.export.deploy_form import apply_deploy_form, externalize_weights, write_shapes_file
    from edgefusion.export.fidelity_check import check_readings, fidelity_warnings
    from edgefusion.latency.device import DeviceProfile
    from edgefusion.metrics import mean_sqnr_db, psnr_db
    from edgefusion.models.torch_to_onnx import quiet_hf_logging
    from edgefusion.quant.policy import PolicySpec
    from edgefusion.quant.quantize_graph import quantize_graph
    from edgefusion.runtime.pipeline import OnnxStableDiffusion, save_png
    from edgefusion.runtime.session import open_session, release_freed_memory, run_session

    quiet_hf_logging()
    stage_dir, lap = Path(stage), _Laps()
    policy = PolicySpec.from_dict(spec)
    cal = CalibrationSet.load(stage_dir / ".work" / "cal")
    ver = CalibrationSet.load(stage_dir / ".work" / "ver")
    with np.load(stage_dir / ".work" / "refs.npz") as data:
        refs_file = {k: data[k] for k in data.files}
    records, all_tiling = {}, {}
    quant_graphs = {c: stage_dir / c / NPU_FILE[c] for c in COMPONENT_ORDER}
    profile = DeviceProfile.from_dict(device)  # validated once; its storage needs and figures serve every graph
    storage = profile.storage_needs()
    for comp in COMPONENT_ORDER:
        refs = [refs_file[f"{comp}/{i}"] for i in range(len(ver.samples[comp]))]
        fpath = stage_dir / "float" / comp / "model.onnx"
        sess = open_session(fpath)
        float_out = [run_session(sess, s.inputs)[0] for s in ver.samples[comp]]
        del sess
        release_freed_memory()
        qg = quantize_graph(fpath, stage_dir / comp / NPU_FILE[comp], comp, policy,
                            [s.inputs for s in cal.samples[comp]], progress=progress, method=method,
                            groups=[s.prompt_index for s in cal.samples[comp]],
                            storage=storage, weight_rounding=weight_rounding)
        form = apply_deploy_form(qg.path, comp)  # before verification: the figures describe the graph written
        sess = open_session(qg.path)
        q_out = [run_session(sess, s.inputs)[0] for s in ver.samples[comp]]
        del sess
        release_freed_memory()
        if not all(np.isfinite(o).all() for o in float_out + q_out):
            which = "float" if not all(np.isfinite(o).all() for o in float_out) else "quantized"
            raise EdgeFusionError(f"the {which} {comp} graph produces NaN/inf on the verification inputs",
                                  "the model overflows in this precision: keep the overflowing layers FP32 in "
                                  "the policy")
        tiling = {}
        if tile:  # attention tiling for the device's SRAM, verified against the untiled graph
            tiling = tile_graph_file(qg.path, comp, profile)
            if tiling:
                sess = open_session(qg.path)
                t_out = [run_session(sess, s.inputs)[0] for s in ver.samples[comp]]
                del sess
                release_freed_memory()
                untiled_db, tiled_db = mean_sqnr_db(refs, q_out), mean_sqnr_db(refs, t_out)
                tiling = {"sites": tiling, "tiled_vs_untiled_sqnr_db": round(mean_sqnr_db(q_out, t_out), 2),
                          "max_abs_diff": float(max(np.abs(a - b).max() for a, b in zip(q_out, t_out))),
                          "untiled_vs_torch_sqnr_db": round(untiled_db, 2), "tiled_vs_torch_sqnr_db": round(tiled_db, 2)}
                # the same result: identical to float rounding, or -- where a float attention (FP16 layers) feeds an
                # 8/16-bit quantizer, so that a changed summation order moves a value into the neighbouring bin --
                # exactly as accurate against PyTorch
                if tiling["tiled_vs_untiled_sqnr_db"] < 80 and abs(tiled_db - untiled_db) > TILING_ACCURACY_DB:
                    raise EdgeFusionError(f"the tiled {comp} graph differs from the untiled one "
                                          f"({tiling['tiled_vs_untiled_sqnr_db']} dB; vs PyTorch {tiled_db:.2f} dB "
                                          f"tiled, {untiled_db:.2f} dB untiled)",
                                          "export with --no-tiling and report the model")
                q_out = t_out  # the manifest describes the graph written: the tiled one
                all_tiling.update({f"{comp}/{k}": v for k, v in tiling["sites"].items()})
        qmodel = onnx.load(str(qg.path), load_external_data=False)
        nodes = Counter(n.op_type for n in qmodel.graph.node)
        del qmodel
        records[comp] = dict(
            file=f"{comp}/{NPU_FILE[comp]}", bytes=_bytes_of(qg.path), layers=qg.resolved.counts(), plan=qg.plan.summary(),
            node_counts={k: nodes.get(k, 0) for k in ("QuantizeLinear", "DequantizeLinear", "Cast")},
            qdq_by_op_type=qg.qdq_by_op_type(), float_vs_torch_sqnr_db=round(mean_sqnr_db(refs, float_out), 2),
            quant_vs_torch_sqnr_db=round(mean_sqnr_db(refs, q_out), 2),
            quant_vs_float_sqnr_db=round(mean_sqnr_db(float_out, q_out), 2), verify_samples=len(q_out),
            ranges=qg.range_rule, weight_rounding=qg.weight_rounding,
            tiling={k: v for k, v in tiling.items() if k != "sites"} | ({"sites": len(tiling["sites"])}
                                                                          if tiling else {}))
        qg.resolved.save(stage_dir / comp / "precisions.json")
        form["unshaped_tensors"] = write_shapes_file(qg.path)
        records[comp]["deploy_form"] = form
        client = None
        if comp == "unet":  # a client calls the UNet with batch 2 under CFG; the NPU graph stays batch 1
            externalize_weights(qg.path)
            release_freed_memory()  # the whole graph was read into Python to re-save it
            client = write_client_graph(qg.path, stage_dir / comp / "model.onnx")
            records[comp]["client"] = verify_client_graph(client, [s.inputs for s in ver.samples[comp]], q_out,
                                                          refs)
            problem = client_check_problem(records[comp]["client"])
            if problem:
                raise EdgeFusionError(f"{comp}: {problem}", "report the model")
        part = _partition_component(qg.path, profile)
        if part:  # verified: the chained parts compute what the whole graph computed
            from edgefusion.runtime.chained import ChainedSession

            sess = ChainedSession([stage_dir / f for f in part["files"]])
            c_out = [run_session(sess, s.inputs)[0] for s in ver.samples[comp]]
            del sess
            release_freed_memory()
            whole = q_out  # the tiled outputs when tiled
            part["chained_vs_whole_sqnr_db"] = round(mean_sqnr_db(whole, c_out), 2)
            if part["chained_vs_whole_sqnr_db"] < 80:
                raise EdgeFusionError(f"the partitioned {comp} differs from the whole graph "
                                      f"({part['chained_vs_whole_sqnr_db']} dB)", "report the model")
            if client is not None:  # it pointed at the whole graph's weights, which go now
                make_self_contained(client)
            for f in qg.path.parent.glob(qg.path.name + "*"):
                f.unlink()
            for f in part["files"]:
                write_shapes_file(stage_dir / f)
            records[comp]["partition"] = part
            records[comp]["file"] = f"{comp}/part*.onnx ({len(part['files'])} sub-graphs)"
            quant_graphs[comp] = [stage_dir / f for f in part["files"]]
        lap(f"quantize_{comp}")

    ref_image = np.load(stage_dir / ".work" / "ref_image.npy")
    prompt, seed = reference["prompt"], reference["seed"]
    float_graphs = {c: stage_dir / "float" / c / "model.onnx" for c in COMPONENT_ORDER}
    float_image = OnnxStableDiffusion(stage_dir, float_graphs, low_memory=True)(prompt, seed=seed, steps=steps)
    quant_image = OnnxStableDiffusion(stage_dir, quant_graphs, low_memory=True)(prompt, seed=seed, steps=steps)
    save_png(ref_image, stage_dir / "verify_torch_float.png")
    save_png(quant_image, stage_dir / "verify_quantized.png")
    quant_db = round(psnr_db(ref_image, quant_image), 2)
    lap("end_to_end_check")
    return {"components": records, "timings": lap.timings, "tiling": all_tiling,
            "warnings": fidelity_warnings(prompt, ref_image, quant_image, quant_db),
            "end_to_end": {"prompt": prompt, "seed": seed, "steps": steps,
                           "float_onnx_vs_torch_psnr_db": round(psnr_db(ref_image, float_image), 2),
                           "quantized_vs_torch_psnr_db": quant_db, **check_readings(prompt, ref_image, quant_image)}}


def _partition_component(path: Path, device) -> dict:
    """Split the written graph into parts when it exceeds the device's per-graph limits; {} when it fits."""
    from edgefusion.tiling.partition import plan_partition, write_partitions

    plan = plan_partition(onnx.load(str(path), load_external_data=False), device.limits["max_graph_weight_mb"],
                          device.limits["max_graph_memory_mb"])
    if plan.parts == 1:
        return {}
    files = write_partitions(path, plan, path.parent)
    return {"files": [f"{path.parent.name}/{f.name}" for f in files], **plan.to_dict()}
