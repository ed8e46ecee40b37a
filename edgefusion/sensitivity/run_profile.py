"""The ``profile`` verb: model -> calibration -> float UNet graph -> sensitivity sweep -> report folder.

The output folder holds ``sensitivity.json`` from the first profiled chunk on (marked ``complete: false`` until the
end) and a ``.work/`` folder with the calibration set and the float UNet graph, so an interrupted run continues
where it stopped when the same command is run again. Every input is checked before anything is written; a run that
fails before the sweep started leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from edgefusion import __version__
from edgefusion.errors import EdgeFusionError
from edgefusion.sensitivity.report import SensitivityReport

HELDOUT_SEED_OFFSET = 10_000  # the export captures its verification set with seed + 10_000 (run_export.py)


def default_profile_dir(model: str) -> Path:
    """``./edgefusion-profile/<model>``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(model).name or model)
    return Path("edgefusion-profile") / safe


def _existing(out: Path, overwrite: bool) -> SensitivityReport | None:
    """A partial report to resume, None for a fresh start; refuses folders it must not touch."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise EdgeFusionError(f"output path '{out}' is a file", "pass a folder path with --out")
    report = out / "sensitivity.json"
    if not report.exists():
        if any(out.iterdir()):
            raise EdgeFusionError(f"'{out}' is not empty and holds no sensitivity.json, so it is not a profile folder",
                                  "pass an empty or new folder with --out")
        return None
    if overwrite:
        shutil.rmtree(out)
        return None
    rep = SensitivityReport.load(report)  # a damaged file is a one-line error naming --overwrite
    return rep


def same_auto_request(previous: dict | None, target_sqnr: float | None, latency_budget_ms: float | None) -> bool:
    """Whether the automatic policy recorded in a report (``checks.auto_policy``) answered this target/budget."""
    target = (previous or {}).get("target") or {}
    if target_sqnr is not None:
        return target.get("kind") == "sqnr_db" and target.get("value") == float(target_sqnr)
    if latency_budget_ms is not None:
        return (target.get("kind") == "cost" and str(target.get("source", "")).startswith("--latency-budget-ms")
                and target.get("value") == float(latency_budget_ms))
    return target.get("kind") == "cost" and target.get("source") == "cost of the default policy"


def _auto_only(report: SensitivityReport, out: Path, info: dict, target_sqnr, latency_budget_ms, device):
    """A complete report is not profiled again. Asked the same target, it is left as it is (its automatic policy
    was simulated; picking again from the report alone would replace it with an unsimulated one); asked another,
    only the automatic policy is recomputed, from the report alone (predicted, not simulated)."""
    from edgefusion.sensitivity.autopolicy import choose_auto_policy
    from edgefusion.sensitivity.outputs import write_auto_files

    p = report.provenance
    asked = {k: info["calibration"][k] for k in ("prompts", "steps", "seed", "height", "width", "method")}
    have = {k: p.calibration.get(k, "minmax" if k == "method" else None) for k in asked}
    if p.model != info["model"] or have != asked or p.policy != info["base_policy"]:
        raise EdgeFusionError(f"'{out}' already holds a complete report for other settings (model {p.model}, "
                              f"calibration {have}, base policy {p.policy.get('name')})",
                              "pass --overwrite to profile again, or another --out")
    had = report.latency.get("device") if report.latency else None
    if had != (device["name"] if device else None):
        raise EdgeFusionError(f"'{out}' holds a complete report costed for device {had}, not {device and device['name']}",
                              "pass --overwrite to profile again, or use `edgefusion export --mpq-policy auto "
                              "--sensitivity DIR --device D`, which re-costs the layers for its device")
    if same_auto_request(report.checks.get("auto_policy"), target_sqnr, latency_budget_ms) and \
            (out / "auto_policy.yaml").is_file():
        print(f"edgefusion: '{out}' already holds the complete report and its automatic policy for this target; "
              "nothing to do (--overwrite profiles again)", file=sys.stderr)
        return report
    auto = choose_auto_policy(report, target_sqnr, latency_budget_ms)
    print(f"edgefusion: '{out}' holds a complete report; its automatic policy was picked again for the new target "
          "from the report alone (predicted, not simulated)", file=sys.stderr)
    write_auto_files(auto, report, out)
    report.checks["auto_policy"] = auto.summary()
    report.save(out / "sensitivity.json")
    return report


def profile(model: str | None = None, out: str | Path | None = None, mpq_policy: str = "w8a8",
            calib_prompts: int = 8, calib_steps: int | None = None, verify_prompts: int = 2,
            prompts_file: str | None = None, seed: int = 0,
            resolution: int | None = None, probes: int = 4, max_samples: int | None = 96,
            target_sqnr: float | None = None, latency_budget_ms: float | None = None, check_layers: int = 4,
            memory_mb: int = 2048, overwrite: bool = False, allow_pickle: bool = False, keep_work: bool = False,
            progress: bool = True, device: str | None = "exynos2400",
            calibration_method: str | None = None, executor=None) -> SensitivityReport:
    """Profile the UNet of ``model``; returns the complete report (also written to ``out``).

    ``mpq_policy`` is the base of the leave-one-out view; ``target_sqnr`` / ``latency_budget_ms`` steer the
    ``auto_policy.yaml`` written beside the report (default: best quality at the cost of ``default``). Layer costs
    come from the latency model of ``device`` (UNet ms per image at the model's own size and steps); ``None``
    falls back to the MAC/byte proxy. ``executor`` (an :class:`~edgefusion.executors.spec.ExecutorSpec`) ``ray``
    runs the sweep's chunks of samples as Ray tasks.
    """
    from edgefusion.calibration.prompts import read_prompts, split_prompts
    from edgefusion.isolated import run_isolated
    from edgefusion.models.source import (
        DEFAULT_MODEL,
        check_weights_format,
        resolve_model_source,
    )
    from edgefusion.quant.policy import load_policy
    from edgefusion.quant.range_methods import resolve_method
    from edgefusion.executors.spec import check_executor
    from edgefusion.sensitivity.auto_export import prompts_digest

    t_start = time.perf_counter()
    executor = check_executor(executor)  # Ray installed, its address answering: before any heavy work
    source = resolve_model_source(model)
    if source.kind == "local":
        check_weights_format(Path(source.ref), allow_pickle)
    spec = load_policy(mpq_policy)
    if device is not None:
        from edgefusion.latency.device import load_device

        device_dict = load_device(device).to_dict()  # a name or YAML path; validated before any heavy work
    else:
        device_dict = None
    for name, value in (("--probes", probes), ("--max-samples", max_samples or 1), ("--check-layers",
                                                                                    check_layers + 1)):
        if value < 1:
            raise EdgeFusionError(f"{name} must be at least {1 if name != '--check-layers' else 0}, got {value}",
                                  f"pass {name} with a larger value")
    if target_sqnr is not None and latency_budget_ms is not None:
        raise EdgeFusionError("both --target-sqnr and --latency-budget-ms were given", "pass only one of them")
    if latency_budget_ms is not None and not latency_budget_ms > 0:
        raise EdgeFusionError(f"--latency-budget-ms must be positive, got {latency_budget_ms}", "pass a budget > 0")
    sampler = source.sampler
    steps = sampler.num_inference_steps if calib_steps is None else calib_steps
    if steps < 1:
        raise EdgeFusionError("calibration steps must be at least 1", "pass --calib-steps 1 or more")
    size = resolution or sampler.height
    if size < 8 or size % 8:
        raise EdgeFusionError(f"--resolution {size} is not a positive multiple of 8", "pass e.g. 256 or 512")
    height, width = (size, size) if resolution else (sampler.height, sampler.width)
    # calibration (ranges) and held-out (measured) prompts are picked exactly as `edgefusion export` picks its
    # calibration and verification prompts, so a report made with the export's flags describes the same data
    if verify_prompts < 0:
        raise EdgeFusionError(f"--verify-prompts must be 0 or more, got {verify_prompts}", "pass e.g. 2")
    prompts, heldout = split_prompts(read_prompts(prompts_file or source.prompts_file), calib_prompts,
                                     verify_prompts)
    method = resolve_method(calibration_method, len(prompts)).name  # as the export resolves it
    out = Path(out) if out else default_profile_dir(model or DEFAULT_MODEL)
    info = {"model": model or DEFAULT_MODEL, "source": source.to_dict(), "base_policy": spec.to_dict(),
            "calibration": {"prompts": len(prompts), "prompts_digest": prompts_digest(prompts), "steps": steps,
                            "guidance_scale": sampler.guidance_scale, "seed": seed, "height": height, "width": width,
                            "method": method},
            "native_resolution": None if (height, width) == (sampler.height, sampler.width)
            else [sampler.height, sampler.width]}
    from edgefusion.paths import check_writable_dir

    check_writable_dir(out)
    existing = _existing(out, overwrite)
    if existing is not None and existing.complete:
        return _auto_only(existing, out, info, target_sqnr, latency_budget_ms, device_dict)
    if existing is not None:
        print(f"edgefusion: resuming from {len(existing.done_samples)} of {len(existing.profiled_samples)} samples "
              f"in '{out}'", file=sys.stderr)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".work"
    try:
        if not ((work / "cal.json").is_file() and (work / "unet" / "model.onnx").is_file()
                and (work / "heldout.json").is_file() == bool(heldout)):
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            t_info, _ = run_isolated(_torch_stage, str(work), source.to_dict(), prompts, heldout, steps, seed,
                                     height, width, allow_pickle, progress, scratch=work)
            (work / "torch_stage.json").write_text(json.dumps(t_info))
        summary, rss = run_isolated(_profile_stage, str(out), info, probes, max_samples, target_sqnr,
                                    latency_budget_ms, check_layers, memory_mb, seed, progress, device_dict,
                                    executor.to_dict(), scratch=work)
    except BaseException:
        if created and not (out / "sensitivity.json").is_file():
            shutil.rmtree(out, ignore_errors=True)  # nothing profiled yet: leave nothing behind
        raise
    report = SensitivityReport.load(out / "sensitivity.json")
    if (work / "torch_stage.json").is_file():
        report.timings_s.update(json.loads((work / "torch_stage.json").read_text()))
    report.timings_s["total"] = round(time.perf_counter() - t_start, 3)
    report.timings_s["profile_peak_rss_mb"] = round(rss, 1)
    report.save(out / "sensitivity.json")
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    del summary
    return report


def _quiet() -> None:
    from edgefusion.models.torch_to_onnx import quiet_hf_logging

    quiet_hf_logging()


def _torch_stage(work: str, source: dict, prompts, heldout, steps, seed, height, width, allow_pickle,
                 progress) -> dict:
    """Own process: load the pipeline, capture the calibration and held-out sets (as the export captures its
    calibration and verification sets), export the float UNet graph."""
    from edgefusion.calibration.capture import capture_calibration
    from edgefusion.models.source import ModelSource, load_pipeline
    from edgefusion.models.torch_to_onnx import export_component

    _quiet()
    src = ModelSource.from_dict(source)
    pipe = load_pipeline(src, allow_pickle=allow_pickle, quiet=False, progress=progress)
    if not src.random_weights:  # a preset's tokenizer is a character-level stand-in: every word is "split"
        from edgefusion.models.tokenizer import warn_prompt_fit

        warn_prompt_fit(pipe.tokenizer, list(prompts) + list(heldout), "calibration/held-out prompts")
    t0 = time.perf_counter()
    try:
        cal = capture_calibration(pipe, prompts, steps, src.sampler.guidance_scale, height, width, seed=seed,
                                  progress=progress)
        if heldout:
            capture_calibration(pipe, heldout, steps, src.sampler.guidance_scale, height, width,
                                seed=seed + HELDOUT_SEED_OFFSET, progress=progress,
                                desc="held-out").save(Path(work) / "heldout")
    except (RuntimeError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise EdgeFusionError(f"the model cannot sample at {height}x{width} ({first})",
                              "pass a --resolution the UNet supports (a multiple of 64 for Stable Diffusion)") from None
    cal.save(Path(work) / "cal")
    t1 = time.perf_counter()
    export_component(pipe, "unet", cal.samples["unet"][0].inputs, Path(work) / "unet" / "model.onnx")
    return {"calibration_s": round(t1 - t0, 3), "export_s": round(time.perf_counter() - t1, 3)}


def _profile_stage(out: str, info: dict, probes: int, max_samples, target_sqnr, latency_budget_ms, check_layers,
                   memory_mb, seed, progress, device: dict | None = None, executor: dict | None = None) -> dict:
    """Own process: sweep (resuming a partial report; on Ray when ``executor`` says so), checks, views, CSV,
    plots, automatic policy."""
    import torch

    from edgefusion.calibration.capture import CalibrationSet
    from edgefusion.executors.spec import ExecutorSpec
    from edgefusion.quant.policy import PolicySpec
    from edgefusion.sensitivity.autopolicy import choose_auto_policy
    from edgefusion.sensitivity.cost import ProxyCost, measure_layer_stats
    from edgefusion.sensitivity.noise_model import sqnr_from
    from edgefusion.sensitivity.outputs import write_auto_files, write_report_files
    from edgefusion.sensitivity.profiler import (
        exact_refiner,
        finish,
        new_report,
        select_samples,
        sweep,
    )
    from edgefusion.sensitivity.report import Provenance
    from edgefusion.sensitivity.simulate import Simulator

    folder = Path(out)
    work = folder / ".work"
    path = folder / "sensitivity.json"
    t0 = time.perf_counter()
    cal = CalibrationSet.load(work / "cal")
    held = CalibrationSet.load(work / "heldout") if (work / "heldout.json").is_file() else None
    sim = Simulator(work / "unet" / "model.onnx", "unet", (held or cal).samples["unet"],
                    None if held is None else cal.samples["unet"], memory_mb=memory_mb, progress=progress,
                    method=info["calibration"]["method"])
    src = info["source"]
    prov = Provenance(model=info["model"], random_weights=src["random_weights"],
                      unet_digest=sim.graph.weights_digest(),
                      calibration={**info["calibration"], "samples": cal.count()["unet"], "digest": cal.digest(),
                                   "measured_on": "calibration samples (in-sample)" if held is None else
                                   {"heldout_prompts": len(held.prompts), "seed": seed + HELDOUT_SEED_OFFSET,
                                    "samples": held.count()["unet"], "digest": held.digest()}},
                      policy=info["base_policy"],
                      method={"name": "first-order propagation, Hutchinson probes (linear_noise.py)",
                              "probes": probes, "max_samples": max_samples, "seed": seed},
                      native_resolution=info["native_resolution"], edgefusion_version=__version__,
                      created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    cost_model = ProxyCost()
    if path.is_file():
        report = SensitivityReport.load(path)
        report.check_compatible(prov, "this run (to resume it)")
    else:
        report = new_report(sim, prov, select_samples(sim.samples, max_samples), measure_layer_stats(sim))
    report.timings_s["setup"] = round(report.timings_s.get("setup", 0.0) + time.perf_counter() - t0, 3)
    sweep(sim, report, path, probes, seed=seed, progress=progress, executor=ExecutorSpec.from_dict(executor))
    whole_cost = None
    if device is not None:  # per-layer device latency at the model's own size (a skeleton when profiled lower)
        from edgefusion.latency.device import DeviceProfile
        from edgefusion.quant.policy import load_policy
        from edgefusion.sensitivity.latency_cost import latency_cost_for

        t1 = time.perf_counter()
        cost_model, whole_cost = latency_cost_for(info["source"], DeviceProfile.from_dict(device),
                                                  load_policy("default"), work / "unet" / "model.onnx",
                                                  (info["calibration"]["height"], info["calibration"]["width"]),
                                                  keep=set(report.sites.op_types))
        report.latency = cost_model.to_dict()
        report.timings_s["latency_table"] = round(time.perf_counter() - t1, 3)
    spec = PolicySpec.from_dict(info["base_policy"])
    finish(sim, report, path, report.resolve(spec), cost_model, check_layers=check_layers)
    t1 = time.perf_counter()
    write_report_files(report, folder)
    report.timings_s["plots"] = round(time.perf_counter() - t1, 3)
    t1 = time.perf_counter()
    idx = report.profiled_samples
    signal = sim.signal(idx)

    def simulate(prec):
        return sqnr_from(signal, sim.plan_noise(sim.plan(prec), idx))

    torch.set_grad_enabled(False)
    try:
        done = {k: v["simulated_db"] for k, v in report.checks.get("policies", {}).items()}
        auto = choose_auto_policy(report, target_sqnr, latency_budget_ms, cost_model, simulate, done,
                                  exact_refiner(sim, report), whole_cost)
    except EdgeFusionError as err:  # an unreachable target: the report itself is complete and kept
        report.checks["auto_policy"] = {"error": str(err)}
        report.save(path)
        raise
    write_auto_files(auto, report, folder)
    report.checks["auto_policy"] = auto.summary()
    report.timings_s["auto_policy"] = round(time.perf_counter() - t1, 3)
    report.save(path)
    return {"auto": auto.summary()}
