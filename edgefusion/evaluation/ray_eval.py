"""Evaluation on Ray: one task per prompt, results streamed back and merged exactly as shards are.

A task makes the PyTorch float reference image of its prompt (with its per-step trace) and then every ONNX
variant's image, and scores them as the local loop does (PSNR/SSIM, per-step errors, attributes, CLIP score); it
returns the images and records. Each worker process loads the pipelines once and keeps them for the tasks that
follow. The driver writes every image as it arrives, puts the results back in prompt order and, per batch of 32
prompts, computes the FID features of the batch's images (read back from the lossless PNGs) exactly as the local
loop batches them, merging the batches with :func:`~edgefusion.evaluation.merge.merge_parts` (FID statistics are
sums), so records, FID statistics and every summary figure equal the local run's. Large read-only inputs (export
folders, a local model folder, the CLIP weights) reach the workers by path on one machine, through the object
store across machines (``executors/folders.py``). A worker killed mid-task is replaced and its prompt retried by
Ray; images depend only on the prompt's seed, so the result is the same.
"""

from __future__ import annotations

import gc
import os
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edgefusion.evaluation.fid import FeatureNet, FeatureStats
from edgefusion.evaluation.merge import EvalPart, merge_parts
from edgefusion.evaluation.prompts import Prompt
from edgefusion.evaluation.results import EvalSpec, ImageRecord
from edgefusion.evaluation.run import FID_BATCH, IMAGES_DIR, image_record
from edgefusion.evaluation.variants import ONNX_FLOAT, TORCH, ExportInfo
from edgefusion.executors.spec import ExecutorSpec

TASKS_PER_WORKER = 4  # tasks in flight per worker: keeps workers busy, bounds what the driver holds


def generate_on_ray(stage: Path, spec: EvalSpec, behind: dict[str, ExportInfo], selected: list[Prompt],
                    files: dict, low_memory: bool, progress: bool, executor: ExecutorSpec,
                    notes: list[str]) -> tuple[dict[str, list[ImageRecord]], dict[str, float]]:
    """The Ray counterpart of the local generation loop: same images (written under ``stage``), FID statistics
    and records; returns the records and the task seconds summed per variant. Appends a note on the executor."""
    from edgefusion.executors.folders import share_folder, ship_folders
    from edgefusion.executors.ray_map import TASK_RETRIES, InOrder, stream_tasks
    from edgefusion.executors.ray_session import ray_session, worker_count
    from edgefusion.runtime.pipeline import save_png

    keys = [v.key for v in spec.variants]
    for key in keys:
        (stage / IMAGES_DIR / key).mkdir(parents=True)
    with ray_session(executor) as ray:
        workers = worker_count(ray)
        ship = ship_folders(ray)
        shares: dict[str, object] = {}

        def share(path) -> object:
            if str(path) not in shares:
                shares[str(path)] = share_folder(ray, path, ship)
            return shares[str(path)]

        from edgefusion.models.source import ModelSource

        model = spec.model  # a local folder as recorded ("embedded" for the shipped model): resolved here
        ctx = {"run": uuid.uuid4().hex, "model": model,
               "model_share": share(ModelSource.from_dict(model).ref) if model.get("kind") == "local" else None,
               "shapes": spec.shapes, "seed": spec.seed, "steps": spec.steps, "guidance_scale": spec.guidance_scale,
               "variants": [(v.key, v.kind) for v in spec.variants],
               "exports": {k: share(e.path) for k, e in behind.items()},
               "clip": share(files["clip_model"]) if files["clip_model"] else None,
               "low_memory": low_memory}
        ctx_ref = ray.put(ctx)
        task = ray.remote(eval_prompt_task).options(num_cpus=1, max_retries=TASK_RETRIES)

        def submit(i: int):
            p = selected[i]
            return task.remote(ctx_ref, {"index": p.index, "text": p.text, "line": p.line})

        fid_net = None
        if files["fid_inception"]:
            fid_net = FeatureNet(files["fid_inception"])
        order, total, batch = InOrder(), EvalPart({k: [] for k in keys}), []
        res = None
        for i, res in stream_tasks(ray, submit, len(selected), window=TASKS_PER_WORKER * workers, progress=progress,
                                   desc=f"evaluate ({workers} Ray workers)"):
            for key, out in res["variants"].items():
                save_png(out.pop("image"), stage / out["record"]["image"])  # the driver keeps no images
            for ready in order.push(i, res):
                batch.append(ready)
                if len(batch) == FID_BATCH:
                    total = merge_parts(keys, [total, _part(batch, keys, stage, fid_net)])
                    batch = []
        if batch:
            total = merge_parts(keys, [total, _part(batch, keys, stage, fid_net)])
        if res is not None:
            spec.timesteps = list(res["timesteps"])
    from edgefusion.evaluation.summary import fid_stats_path

    for key, s in total.stats.items():
        fid_stats_path(stage, key).parent.mkdir(exist_ok=True)
        s.save(fid_stats_path(stage, key))
    notes.append(f"generated by Ray tasks, one per prompt, on {workers} workers ({executor}); timings are task "
                 "seconds summed over workers")
    return total.records, total.timings_s


def _part(results: list[dict], keys: list[str], stage: Path, fid_net) -> EvalPart:
    """One batch of prompt results (in prompt order) as a mergeable part; FID features of the batch's images as
    the local loop computes them (one call per variant on the same images, in the same order)."""
    from PIL import Image

    records = {k: [ImageRecord(**r["variants"][k]["record"]) for r in results] for k in keys}
    timings = {k: round(sum(r["variants"][k]["seconds"] for r in results), 3) for k in keys}
    stats = {}
    if fid_net is not None:
        for k in keys:
            images = [np.asarray(Image.open(stage / rec.image).convert("RGB"), dtype=np.float64) / 255.0
                      for rec in records[k]]
            stats[k] = FeatureStats.of(fid_net(images))
    return EvalPart(records, stats, timings)


# ---- inside a worker process

_STATE: dict = {}


def _worker_state(ctx: dict) -> dict:
    """This worker's pipelines and metric networks for the run ``ctx['run']`` (loaded by its first task)."""
    if _STATE.get("run") == ctx["run"]:
        return _STATE
    _STATE.clear()
    gc.collect()
    import ray
    import torch

    from edgefusion.evaluation.clip_score import ClipScorer
    from edgefusion.evaluation.variants import float_graphs, read_export
    from edgefusion.executors.folders import local_path
    from edgefusion.executors.ray_session import assigned_cpus
    from edgefusion.models.source import ModelSource, load_pipeline
    from edgefusion.runtime.pipeline import OnnxStableDiffusion

    threads = assigned_cpus(ray)
    torch.set_num_threads(threads)
    os.environ["EDGEFUSION_ORT_THREADS"] = str(threads)  # onnxruntime would otherwise use every core per worker
    source = ModelSource.from_dict(ctx["model"])
    if ctx["model_share"] is not None:
        source.ref = str(local_path(ctx["model_share"]))
    state = {"torch": load_pipeline(source, quiet=True), "onnx": {}}
    for key, kind in ctx["variants"]:
        if kind == TORCH:
            continue
        info = read_export(local_path(ctx["exports"][key]))
        state["onnx"][key] = OnnxStableDiffusion(info.path, float_graphs(info) if kind == ONNX_FLOAT else None,
                                                 low_memory=ctx["low_memory"])
    state["clip"] = ClipScorer(local_path(ctx["clip"])) if ctx["clip"] else None
    _STATE.update(state, run=ctx["run"])
    return _STATE


def eval_prompt_task(ctx: dict, prompt: dict) -> dict:
    """One prompt, every variant: ``{"index", "timesteps", "variants": {key: {"record", "image", "seconds"}}}`` (a Ray task; the reference first, then each ONNX variant scored against it)."""
    from edgefusion.evaluation.image_metrics import image_psnr_db, image_ssim
    from edgefusion.evaluation.trace import onnx_traced_image, step_errors, torch_traced_image

    st = _worker_state(ctx)
    p = Prompt(prompt["index"], prompt["text"], prompt.get("line"))
    seed = ctx["seed"] + p.index
    steps, gs = ctx["steps"], ctx["guidance_scale"]
    out: dict = {"index": p.index, "variants": {}}

    def scored(key: str, image: np.ndarray, t0: float, rec: ImageRecord | None = None) -> None:
        rec = rec or image_record(key, p, seed, image, st["clip"])
        out["variants"][key] = {"record": asdict(rec), "image": image, "seconds": time.perf_counter() - t0}

    ref_image = ref_trace = None
    for key, kind in ctx["variants"]:
        t0 = time.perf_counter()
        if kind == TORCH:
            h, w = int(ctx["shapes"]["height"]), int(ctx["shapes"]["width"])
            ref_image, ref_trace = torch_traced_image(st["torch"], p.text, seed, steps, gs, h, w)
            out["timesteps"] = ref_trace.timesteps
            scored(key, ref_image, t0)
            continue
        image, trace = onnx_traced_image(st["onnx"][key], p.text, seed, steps, gs)
        rec = image_record(key, p, seed, image, st["clip"])
        rec.psnr_db, rec.ssim = image_psnr_db(ref_image, image), image_ssim(ref_image, image)
        rec.noise_sqnr_db, rec.latent_psnr_db = step_errors(ref_trace, trace)
        scored(key, image, t0, rec)
    return out
