"""Evaluate exports of one model on (a shard of) a prompt set: PyTorch float reference, float ONNX, each export;
same seeds, scheduler and initial latents; image, per-step and text-alignment metrics; ``results.json``, plots and
``report.html`` written all-or-nothing into one folder."""

from __future__ import annotations

import gc
import shutil
import time
from pathlib import Path

import numpy as np

from edgefusion.errors import EdgeFusionError
from edgefusion.evaluation.alignment import attribute_matches, parse_caption
from edgefusion.evaluation.fid import FeatureNet, FeatureStats, load_reference_stats
from edgefusion.evaluation.options import MetricOptions
from edgefusion.evaluation.prompts import Prompt, PromptSet
from edgefusion.evaluation.results import (
    RESULTS_FILE,
    EvalResult,
    EvalSpec,
    ImageRecord,
)
from edgefusion.evaluation.shard import ShardSpec
from edgefusion.evaluation.variants import (
    ONNX_FLOAT,
    TORCH,
    ExportInfo,
    Variant,
    read_export,
    resolve_variants,
)
from edgefusion.executors.spec import ExecutorSpec

IMAGES_DIR = "images"
FID_BATCH = 32  # images featurised together (FID statistics are summed per batch, in prompt order)


def image_record(key: str, prompt: Prompt, seed: int, image: np.ndarray, clip=None) -> ImageRecord:
    """The record of variant ``key``'s image of ``prompt``: where it is saved, attribute matches (shapes captions)
    and CLIP score (when a scorer is given); the metrics against the reference are filled in by the caller."""
    asked = parse_caption(prompt.text)
    return ImageRecord(prompt.index, seed, f"{IMAGES_DIR}/{key}/{prompt.index:05d}.png",
                       attributes=attribute_matches(image, asked) if asked is not None else None,
                       clip_score=clip(image, prompt.text) if clip else None)


class _VariantRun:
    """Collects one variant's records, images and FID features inside the staging folder."""

    def __init__(self, stage: Path, variant: Variant, clip, fid_net):
        self.stage, self.variant, self.clip, self.fid_net = stage, variant, clip, fid_net
        self.records: list[ImageRecord] = []
        self.stats: FeatureStats | None = None
        self._pending: list[np.ndarray] = []
        (stage / IMAGES_DIR / variant.key).mkdir(parents=True)

    def add(self, prompt: Prompt, seed: int, image: np.ndarray) -> ImageRecord:
        from edgefusion.runtime.pipeline import save_png

        rec = image_record(self.variant.key, prompt, seed, image, self.clip)
        save_png(image, self.stage / rec.image)
        if self.fid_net:
            self._pending.append(image)
            if len(self._pending) >= FID_BATCH:
                self._flush()
        self.records.append(rec)
        return rec

    def _flush(self) -> None:
        if self._pending:
            stats = FeatureStats.of(self.fid_net(self._pending))
            self.stats = stats if self.stats is None else self.stats.merged(stats)
            self._pending = []

    def finish(self) -> None:
        """Featurise what is left and write the FID statistics."""
        from edgefusion.evaluation.summary import fid_stats_path

        if self.fid_net:
            self._flush()
            if self.stats is not None:
                fid_stats_path(self.stage, self.variant.key).parent.mkdir(exist_ok=True)
                self.stats.save(fid_stats_path(self.stage, self.variant.key))


def evaluate(exports: list[str | Path], prompts: PromptSet, out: str | Path, shard: ShardSpec | None = None,
             seed: int = 0, steps: int | None = None, guidance_scale: float | None = None,
             metrics: MetricOptions | None = None, float_onnx: bool = True, low_memory: bool = False,
             grid_rows: int = 16, overwrite: bool = False, progress: bool = True,
             executor: ExecutorSpec | None = None) -> EvalResult:
    """Generate and score every variant on this shard's prompts; returns the result written to ``out``.

    Every argument maps to one flag of ``eval/evaluate.py``. Inputs (exports of one model, metric files, shard,
    steps, executor) are checked before any image is made; ``out`` appears only when everything succeeded.
    ``executor`` ``ray``: one Ray task per prompt (see ``ray_eval.py``); the results are the same.
    """
    from edgefusion.executors.spec import check_executor
    from edgefusion.export.atomic import atomic_dir

    out, shard = Path(out), shard or ShardSpec()
    executor = check_executor(executor)
    infos = [read_export(p) for p in exports]
    variants, behind, notes = resolve_variants(infos, out.resolve(), float_onnx)
    files = (metrics or MetricOptions()).resolve()
    ref_stats = load_reference_stats(files["fid_ref_stats"]) if files["fid_ref_stats"] else None
    sampler = infos[0].manifest["source"].get("sampler", {})
    steps = int(sampler.get("num_inference_steps", 0)) if steps is None else steps
    guidance_scale = float(sampler.get("guidance_scale", 1.0)) if guidance_scale is None else guidance_scale
    if steps < 1:
        raise EdgeFusionError(f"steps must be at least 1, got {steps}", "pass --steps 1 or more")
    selected = shard.select(prompts.prompts)
    if not selected:
        raise EdgeFusionError(f"shard {shard} of a {len(prompts.prompts)}-prompt set holds no prompts",
                              f"split it into at most {len(prompts.prompts)} shards")
    if prompts.skipped_blank_lines:
        notes.append(f"{prompts.skipped_blank_lines} blank line(s) of the prompt file were skipped")
    spec = EvalSpec(model=infos[0].manifest["source"], shapes=infos[0].manifest["shapes"], prompts=prompts,
                    seed=seed, steps=steps, guidance_scale=guidance_scale, variants=variants,
                    metrics={"clip": files["clip_model"] is not None, "fid": files["fid_inception"] is not None,
                             "fid_ref_stats": files["fid_ref_stats"] is not None},
                    metric_files={k: str(v) for k, v in files.items() if v is not None})
    with atomic_dir(out, overwrite, marker=RESULTS_FILE, what="edgefusion evaluation") as stage:
        return _evaluate_into(stage, spec, behind, selected, shard, files, ref_stats, notes, low_memory, grid_rows,
                              progress, executor)


def _evaluate_into(stage: Path, spec: EvalSpec, behind: dict[str, ExportInfo], selected: list[Prompt],
                   shard: ShardSpec,
                   files: dict, ref_stats, notes: list[str], low_memory: bool, grid_rows: int,
                   progress: bool, executor: ExecutorSpec) -> EvalResult:
    from edgefusion.evaluation.plots import write_step_plots
    from edgefusion.evaluation.report import write_report
    from edgefusion.evaluation.summary import summarise

    if executor.is_ray:
        from edgefusion.evaluation.ray_eval import generate_on_ray

        records, timings = generate_on_ray(stage, spec, behind, selected, files, low_memory, progress, executor,
                                           notes)
    else:
        records, timings = _generate_local(stage, spec, behind, selected, files, low_memory, progress)
    result = EvalResult(spec, shard.count, [shard.index], records, notes, timings)
    if ref_stats is not None and files["fid_inception"] is not None:
        width = next(iter(FeatureStats.load(p).total.shape[0] for p in (stage / "fid").glob("*.npz")), None)
        ref_stats = load_reference_stats(files["fid_ref_stats"], width)
    result.summary = summarise(result, stage, ref_stats)
    plots = write_step_plots(result.summary, spec.timesteps, stage)
    result.save(stage)
    write_report(result, stage, plots, grid_rows)
    return result


def _generate_local(stage: Path, spec: EvalSpec, behind: dict[str, ExportInfo], selected: list[Prompt], files: dict,
                    low_memory: bool, progress: bool) -> tuple[dict[str, list[ImageRecord]], dict[str, float]]:
    """Every variant in turn over the prompts, in this process (the reference's images and traces kept in
    ``.work/`` for the others); writes images and FID statistics; returns the records and seconds per variant."""
    from tqdm.auto import tqdm

    from edgefusion.evaluation.clip_score import ClipScorer

    work = stage / ".work"
    work.mkdir()
    if not progress:  # nor the libraries' loading bars
        from edgefusion.models.source import quiet_progress_bars

        quiet_progress_bars()
    clip = ClipScorer(files["clip_model"]) if files["clip_model"] else None
    fid_net = FeatureNet(files["fid_inception"]) if files["fid_inception"] else None
    records, timings = {}, {}
    for v in spec.variants:
        t0 = time.perf_counter()
        run = _VariantRun(stage, v, clip, fid_net)
        bar = tqdm(selected, desc=v.label, disable=not progress)
        if v.kind == TORCH:
            spec.timesteps = _run_reference(run, spec, bar, work)
        else:
            _run_onnx(run, spec, bar, work, behind[v.key], low_memory)
        run.finish()
        records[v.key] = run.records
        timings[v.key] = round(time.perf_counter() - t0, 3)
        gc.collect()
    shutil.rmtree(work)
    return records, timings


def _run_reference(run: _VariantRun, spec: EvalSpec, prompts, work: Path) -> list[float]:
    """PyTorch float images and traces (kept in ``work`` for the other variants); returns the timesteps."""
    from edgefusion.evaluation.trace import torch_traced_image
    from edgefusion.models.source import ModelSource, load_pipeline

    pipe = load_pipeline(ModelSource.from_dict(spec.model), quiet=True)
    h, w = int(spec.shapes["height"]), int(spec.shapes["width"])
    timesteps: list[float] = []
    for p in prompts:
        seed = spec.seed + p.index
        image, trace = torch_traced_image(pipe, p.text, seed, spec.steps, spec.guidance_scale, h, w)
        np.save(work / f"{p.index}.npy", image)
        trace.save(work / f"{p.index}.npz")
        run.add(p, seed, image)
        timesteps = trace.timesteps
    del pipe
    return timesteps


def _run_onnx(run: _VariantRun, spec: EvalSpec, prompts, work: Path, export: ExportInfo, low_memory: bool) -> None:
    """Images of one ONNX variant, scored against the reference images and traces in ``work``."""
    from edgefusion.evaluation.image_metrics import image_psnr_db, image_ssim
    from edgefusion.evaluation.trace import StepTrace, onnx_traced_image, step_errors
    from edgefusion.evaluation.variants import float_graphs
    from edgefusion.runtime.pipeline import OnnxStableDiffusion

    graphs = float_graphs(export) if run.variant.kind == ONNX_FLOAT else None
    pipe = OnnxStableDiffusion(export.path, graphs, low_memory=low_memory)
    for p in prompts:
        seed = spec.seed + p.index
        image, trace = onnx_traced_image(pipe, p.text, seed, spec.steps, spec.guidance_scale)
        ref_image, ref_trace = np.load(work / f"{p.index}.npy"), StepTrace.load(work / f"{p.index}.npz")
        rec = run.add(p, seed, image)
        rec.psnr_db, rec.ssim = image_psnr_db(ref_image, image), image_ssim(ref_image, image)
        rec.noise_sqnr_db, rec.latent_psnr_db = step_errors(ref_trace, trace)
    del pipe
