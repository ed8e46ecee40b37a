"""``edgefusion export --mpq-policy auto``: choose the policy inside an export, after its calibration.

:class:`AutoRequest` stands in for the policy until the export has its calibration set and float UNet graph; then
:meth:`AutoRequest.choose` (own process) profiles the UNet on the export's calibration set, or reads a given report
after checking it describes the same model and calibration, picks the policy and writes ``sensitivity/`` (report,
plots, ``auto_policy.yaml``, frontier) into the export folder. The returned :class:`PolicySpec` is what the export
quantizes with and saves as ``policy.yaml``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgefusion.errors import EdgeFusionError
from edgefusion.quant.policy import PolicySpec

EXPORT_VERIFY_PROMPTS = 2  # the export's default: profile picks its calibration prompts the same way


def prompts_digest(prompts: list[str]) -> str:
    """Hash of a prompt list (which prompts a calibration set was captured from)."""
    return hashlib.sha256(json.dumps(list(prompts)).encode()).hexdigest()[:16]


@dataclass
class AutoRequest:
    """``--mpq-policy auto`` with its target, validated before any heavy work."""

    target_sqnr: float | None = None
    latency_budget_ms: float | None = None
    sensitivity: str | None = None  # an existing report (folder or sensitivity.json)
    name: str = "auto"
    peak_rss_mb: float = 0.0  # of the process :meth:`choose` ran (not part of the request: excluded from to_dict)
    executor: dict | None = field(default=None, compare=False)  # where the profiling step runs (not recorded)

    @classmethod
    def create(cls, target_sqnr: float | None, latency_budget_ms: float | None,
               sensitivity: str | None, executor=None) -> AutoRequest:
        """Check the arguments (one-line errors) and read the report once, so a bad one fails early; ``executor``
        (an :class:`~edgefusion.executors.spec.ExecutorSpec`, checked here) runs the profiling step."""
        from edgefusion.executors.spec import check_executor

        executor = check_executor(executor)
        if target_sqnr is not None and latency_budget_ms is not None:
            raise EdgeFusionError("both --target-sqnr and --latency-budget-ms were given", "pass only one of them")
        if latency_budget_ms is not None and not latency_budget_ms > 0:
            raise EdgeFusionError(f"--latency-budget-ms must be positive, got {latency_budget_ms}",
                                  "pass a budget > 0 (UNet ms per image on the export's --device)")
        if sensitivity is not None:
            from edgefusion.sensitivity.report import SensitivityReport

            rep = SensitivityReport.load(sensitivity)
            if not rep.complete:
                raise EdgeFusionError(f"the sensitivity report in '{sensitivity}' is unfinished",
                                      "re-run the same `edgefusion profile` command to complete it")
        return cls(target_sqnr, latency_budget_ms, str(sensitivity) if sensitivity else None,
                   executor=executor.to_dict() if executor.is_ray else None)

    def to_dict(self) -> dict:
        """What the manifest records until the policy is chosen."""
        return {"name": "auto", **{k: v for k, v in asdict(self).items() if k not in ("peak_rss_mb", "executor")}}

    def choose(self, stage: Path, source: dict, shapes: dict, seed: int, progress: bool = False,
               device: dict | None = None, tiling: bool = True, method: str = "crossval") -> PolicySpec:
        """Profile (or load the report), pick the policy, write ``<stage>/sensitivity/``; returns the policy.
        Layers are costed on ``device`` (a DeviceProfile dict) by the latency model; ``None``: the MAC/byte proxy."""
        from edgefusion.isolated import run_isolated

        work = Path(stage) / ".work"
        request = {**self.to_dict(), "executor": self.executor}  # the manifest's record has no executor
        spec, self.peak_rss_mb = run_isolated(_auto_stage, str(stage), request, source, shapes, seed,
                                              progress, device, tiling, method,
                                              scratch=work if work.is_dir() else None)
        return PolicySpec.from_dict(spec, where="automatic policy")


def check_report_for_export(report, digest: str, cal, native: tuple[int, int],
                            method: str = "crossval") -> str | None:
    """None if ``report`` describes this export's UNet and calibration; a note if it was profiled on the same
    prompts at a lower resolution; otherwise a one-line error saying why not."""
    p = report.provenance
    if p.unet_digest != digest:
        raise EdgeFusionError(f"the sensitivity report was computed for another model ({p.model}, UNet digest "
                              f"{p.unet_digest}; this export's UNet: {digest})",
                              "profile this model, or omit --sensitivity to profile inside the export")
    had = p.calibration.get("method", "minmax")
    if had != method:
        raise EdgeFusionError(f"the sensitivity report was computed with --calibration-method {had}, this export "
                              f"uses {method}", f"pass --calibration-method {had} to the export, or profile again")
    if p.calibration.get("digest") == cal.digest():
        return None
    same = (p.calibration.get("prompts_digest") == prompts_digest(cal.prompts)
            and p.calibration.get("steps") == cal.steps
            and abs(float(p.calibration.get("guidance_scale", -1)) - cal.guidance_scale) < 1e-9)
    lower = [p.calibration.get("height"), p.calibration.get("width")] != list(native)
    if same and lower:
        return (f"profiled at {p.calibration.get('height')}x{p.calibration.get('width')} on the same prompts "
                f"(export: {native[0]}x{native[1]})")
    raise EdgeFusionError(
        f"the sensitivity report was computed on another calibration set ({p.calibration.get('prompts')} prompts x "
        f"{p.calibration.get('steps')} steps at {p.calibration.get('height')}px, digest "
        f"{p.calibration.get('digest')}; this export: {len(cal.prompts)} x {cal.steps}, digest {cal.digest()})",
        "profile with the export's --calib-prompts/--calib-steps/--seed/--prompts-file, or omit --sensitivity")


def _auto_stage(stage: str, request: dict, source: dict, shapes: dict, seed: int, progress: bool,
                device: dict | None = None, tiling: bool = True, method: str = "crossval") -> dict:
    """Own process: the report (given, or profiled here on the export's calibration set), the automatic policy
    (simulated when profiled here), and the files under ``sensitivity/``."""
    import psutil
    import torch

    from edgefusion import __version__
    from edgefusion.calibration.capture import CalibrationSet
    from edgefusion.executors.spec import ExecutorSpec
    from edgefusion.quant.policy import load_policy
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
    from edgefusion.sensitivity.report import Provenance, SensitivityReport
    from edgefusion.sensitivity.simulate import Simulator
    from edgefusion.sensitivity.torch_graph import TorchGraph

    req = AutoRequest(**{k: v for k, v in request.items() if k not in ("name", "peak_rss_mb")})
    stage_dir = Path(stage)
    out = stage_dir / "sensitivity"
    out.mkdir(exist_ok=True)
    float_unet = stage_dir / "float" / "unet" / "model.onnx"
    cal = CalibrationSet.load(stage_dir / ".work" / "cal")
    native = (int(shapes["height"]), int(shapes["width"]))
    cost_model, whole_cost = ProxyCost(), None
    if device is not None:  # the export's device and tiling, at the export's size (the float graph itself)
        from edgefusion.latency.device import DeviceProfile
        from edgefusion.sensitivity.latency_cost import latency_cost_for

        cost_model, whole_cost = latency_cost_for(source, DeviceProfile.from_dict(device), load_policy("default"),
                                                  float_unet, native, tiling)
    if req.sensitivity:  # the report predicts; the export's own verification measures
        report = SensitivityReport.load(req.sensitivity)
        note = check_report_for_export(report, TorchGraph(float_unet).weights_digest(), cal, native, method)
        report.latency = cost_model.to_dict() if device is not None else {}  # re-costed for this export's device
        report.save(out / "sensitivity.json")
        write_report_files(report, out)
        auto = choose_auto_policy(report, req.target_sqnr, req.latency_budget_ms, cost_model, whole_cost=whole_cost,
                                  previous=report.checks.get("auto_policy"))
        write_auto_files(auto, report, out)
        spec = auto.spec
        if note:
            spec.description += f"; {note}"
        return spec.to_dict()
    ver = CalibrationSet.load(stage_dir / ".work" / "ver")  # the export's verification set: measured on it
    sim = Simulator(float_unet, "unet", ver.samples["unet"], cal.samples["unet"], progress=progress, method=method)
    need = 3 * sim.sample_bytes
    if need > 0.8 * psutil.virtual_memory().available:
        raise EdgeFusionError(
            f"profiling this UNet at {native[0]}x{native[1]} inside the export needs about {need / 2**30:.1f} GB",
            "profile it first at a lower resolution (`edgefusion profile --model M --resolution 256` with the "
            "export's calibration flags) and pass that folder with --sensitivity")
    base = load_policy("w8a8")
    prov = Provenance(model=str(source.get("ref", "")), random_weights=bool(source.get("random_weights")),
                      unet_digest=sim.graph.weights_digest(),
                      calibration={"prompts": len(cal.prompts), "prompts_digest": prompts_digest(cal.prompts),
                                   "steps": cal.steps, "guidance_scale": cal.guidance_scale, "seed": seed,
                                   "height": native[0], "width": native[1], "samples": cal.count()["unet"],
                                   "method": method,
                                   "digest": cal.digest(),
                                   "measured_on": {"heldout_prompts": len(ver.prompts), "seed": seed + 10_000,
                                                   "samples": ver.count()["unet"], "digest": ver.digest()}},
                      policy=base.to_dict(),
                      method={"name": "first-order propagation, Hutchinson probes (linear_noise.py)", "probes": 4,
                              "max_samples": 96, "seed": 0},
                      edgefusion_version=__version__)
    report = new_report(sim, prov, select_samples(sim.samples, 96), measure_layer_stats(sim))
    if device is not None:
        report.latency = cost_model.to_dict()
    path = out / "sensitivity.json"
    sweep(sim, report, path, 4, progress=progress, executor=ExecutorSpec.from_dict(req.executor))
    finish(sim, report, path, report.resolve(base), cost_model)
    write_report_files(report, out)
    idx = report.profiled_samples
    signal = sim.signal(idx)
    torch.set_grad_enabled(False)

    def simulate(prec):
        return sqnr_from(signal, sim.plan_noise(sim.plan(prec), idx))

    done = {k: v["simulated_db"] for k, v in report.checks.get("policies", {}).items()}
    auto = choose_auto_policy(report, req.target_sqnr, req.latency_budget_ms, cost_model, simulate, done,
                              exact_refiner(sim, report), whole_cost)
    report.checks["auto_policy"] = auto.summary()
    report.save(path)
    write_auto_files(auto, report, out)
    return auto.spec.to_dict()


def policy_or_auto(mpq_policy: str, target_sqnr: float | None = None, latency_budget_ms: float | None = None,
                   sensitivity: str | None = None, executor=None):
    """``--mpq-policy``: a preset/YAML (:class:`PolicySpec`) or ``auto`` (an :class:`AutoRequest` to choose later).
    ``executor`` ``ray`` applies to ``auto``'s profiling step only."""
    from edgefusion.quant.policy import load_policy

    if mpq_policy != "auto":
        given = [f for f, v in (("--target-sqnr", target_sqnr), ("--latency-budget-ms", latency_budget_ms),
                                ("--sensitivity", sensitivity),
                                ("--executor ray", executor if executor is not None and executor.is_ray else None))
                 if v is not None]
        if given:
            raise EdgeFusionError(f"{given[0]} only applies to --mpq-policy auto", "add --mpq-policy auto or drop it")
        return load_policy(mpq_policy, also=("auto",))
    return AutoRequest.create(target_sqnr, latency_budget_ms, sensitivity, executor)
