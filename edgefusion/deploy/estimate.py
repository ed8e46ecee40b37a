"""The ``latency`` verb: estimate one image's NPU latency from an export folder or straight from an architecture."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from edgefusion.deploy.tiling import plan_and_tile
from edgefusion.errors import EdgeFusionError
from edgefusion.latency.backends import select_backend
from edgefusion.latency.device import load_device
from edgefusion.latency.report import ComponentLatency, LatencyReport

COMPONENTS = ("text_encoder", "unet", "vae_decoder")


def calls_per_image(steps: int, guidance: bool) -> dict[str, int]:
    """Graph calls for one image: CFG runs the text encoder and every UNet step twice (batch 1 per call)."""
    branches = 2 if guidance else 1
    return {"text_encoder": branches, "unet": steps * branches, "vae_decoder": 1}


def estimate_model(model: str | None = None, mpq_policy: str = "default", device: str = "exynos2400",
                   steps: int | None = None, tiling: bool = True, guidance_scale: float | None = None,
                   height: int | None = None, width: int | None = None, backend: str = "auto") -> LatencyReport:
    """Estimate from an architecture (preset, local folder or ``embedded``) without exporting weights."""
    from edgefusion.latency.skeleton import build_skeletons
    from edgefusion.models.source import resolve_model_source
    from edgefusion.quant.layers import find_layers
    from edgefusion.quant.policy import load_policy, resolve_policy

    source = resolve_model_source(model)
    spec = load_policy(mpq_policy)
    profile = load_device(device)
    steps = source.sampler.num_inference_steps if steps is None else steps
    if steps < 1:
        raise EdgeFusionError(f"steps must be at least 1, got {steps}", "pass --steps 1 or more")
    gs = source.sampler.guidance_scale if guidance_scale is None else guidance_scale
    chosen, notes = select_backend(backend, profile)
    skeletons = build_skeletons(source, height, width)
    calls = calls_per_image(steps, gs > 1.0)
    comps, tiles = {}, {}
    for comp, graph in skeletons.items():
        layers = find_layers(graph, comp)
        plan, decided = plan_and_tile(graph, comp, profile, layers, resolve_policy(spec, layers), tiling)
        tiles.update({f"{comp}/{k}": v for k, v in decided.items()})
        comps[comp] = ComponentLatency.from_costs([chosen.estimate(graph, comp, profile, plan)], calls[comp])
    return LatencyReport.combine(profile.name, chosen.name, _source_name(source.to_dict()), spec.name, steps, gs > 1.0, tiling, comps,
                                 tiles, notes)


def _source_name(source: dict) -> str:
    from edgefusion.models.source import embedded_model_dir

    if source["kind"] == "preset":
        return source["ref"]
    return "embedded" if Path(source["ref"]) == embedded_model_dir().resolve() else Path(source["ref"]).name


def _export_device(export_dir: Path, manifest: dict) -> str:
    """The device an export was made for: a shipped profile by name, or the copy saved beside its graphs."""
    from edgefusion.latency.device import device_names

    name = manifest.get("device", "exynos2400")
    saved = export_dir / "device.json"
    return name if name in device_names() or not saved.is_file() else str(saved)


def component_graph_files(export_dir: Path, manifest: dict, component: str) -> list[Path]:
    """The ONNX file(s) of one component of an export (several when it was partitioned)."""
    from edgefusion.runtime.layout import npu_graph_files

    found = npu_graph_files(export_dir, component, manifest)  # the NPU's graph, not the batch-dynamic client one
    files = found if isinstance(found, list) else [found]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise EdgeFusionError(f"export folder '{export_dir}' lacks {missing[0]}", "re-run `edgefusion export`")
    return files


def estimate_export(export_dir: str | Path, device: str | None = None, steps: int | None = None,
                    guidance_scale: float | None = None, backend: str = "auto") -> LatencyReport:
    """Estimate from the graphs an export folder holds (QDQ precisions, tiling and partitions as written)."""
    export_dir = Path(export_dir)
    mpath = export_dir / "manifest.json"
    if not mpath.is_file():
        raise EdgeFusionError(f"'{export_dir}' has no manifest.json, so it is not an edgefusion export",
                              "pass a folder written by `edgefusion export`, or --model SRC")
    manifest = json.loads(mpath.read_text())
    profile = load_device(device or _export_device(export_dir, manifest))
    sampler = manifest["source"]["sampler"]
    steps = sampler["num_inference_steps"] if steps is None else steps
    if steps < 1:
        raise EdgeFusionError(f"steps must be at least 1, got {steps}", "pass --steps 1 or more")
    gs = sampler["guidance_scale"] if guidance_scale is None else guidance_scale
    chosen, notes = select_backend(backend, profile)
    calls = calls_per_image(steps, gs > 1.0)
    comps = {}
    for comp in COMPONENTS:
        costs = [chosen.estimate(onnx.load(str(f), load_external_data=False), comp, profile)
                 for f in component_graph_files(export_dir, manifest, comp)]
        comps[comp] = ComponentLatency.from_costs(costs, calls[comp])
    tiling = manifest.get("tiling") or {}
    return LatencyReport.combine(profile.name, chosen.name, _source_name(manifest["source"]), manifest["policy"]["name"], steps, gs > 1.0,
                                 bool(tiling.get("sites")), comps, tiling.get("sites", {}), notes)
