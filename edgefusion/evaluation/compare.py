"""Export one model under several policies and evaluate them together in one run (the README's policy table).

Layout of the output folder: ``exports/<policy>/`` (the first policy's export keeps its float graphs, which give
the float ONNX column), ``evaluation/`` (results.json, report.html, images, plots), ``compare.json`` (settings,
wall time, the table) and ``table.md``. Written all-or-nothing.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from edgefusion.errors import EdgeFusionError
from edgefusion.evaluation.results import EvalResult
from edgefusion.executors.spec import ExecutorSpec

COMPARE_FILE = "compare.json"
DEFAULT_POLICIES = ("default", "w8a8", "w8a16", "fp16")


def compare_policies(out: str | Path, model: str | None = None, policies: tuple[str, ...] = DEFAULT_POLICIES,
                     prompts: str = "held-out:100", seed: int = 0, calib_prompts: int = 8,
                     calib_steps: int | None = None, verify_prompts: int = 2, overwrite: bool = False,
                     progress: bool = True, executor: ExecutorSpec | None = None) -> tuple[EvalResult, dict]:
    """Export ``model`` with each policy, evaluate all exports on ``prompts``; returns the evaluation result and
    the ``compare.json`` content. Every argument maps to one flag of ``eval/compare_policies.py``. ``executor``
    ``ray``: the exports run as Ray tasks (``ray_compare.py``), the evaluation as one task per prompt."""
    from edgefusion.evaluation.prompts import load_prompt_set
    from edgefusion.evaluation.run import evaluate
    from edgefusion.evaluation.table import markdown_table
    from edgefusion.executors.spec import check_executor
    from edgefusion.export.atomic import atomic_dir
    from edgefusion.export.run_export import export
    from edgefusion.quant.policy import load_policy

    t0 = time.perf_counter()
    executor = check_executor(executor)
    if not policies:
        raise EdgeFusionError("no policies given", "pass e.g. --policies default,w8a8,w8a16,fp16")
    if len(set(policies)) != len(policies):
        raise EdgeFusionError(f"policy list {','.join(policies)} names one policy twice", "name each policy once")
    names = [load_policy(p).name for p in policies]  # checks every policy before any work
    prompt_set = load_prompt_set(prompts, seed)
    with atomic_dir(Path(out), overwrite, marker=COMPARE_FILE, what="edgefusion policy comparison") as stage, \
            _session(executor):
        timings, folders = {}, []
        jobs = []
        for i, (policy, name) in enumerate(zip(policies, names)):
            folder = stage / "exports" / (name if names.count(name) == 1 else f"{name}-{i + 1}")
            jobs.append((name, folder, {"model": model, "mpq_policy": policy, "calib_prompts": calib_prompts,
                                        "calib_steps": calib_steps, "verify_prompts": verify_prompts, "seed": seed,
                                        "keep_float": i == 0}))
            folders.append(folder)
        if executor.is_ray:
            from edgefusion.evaluation.ray_compare import exports_on_ray

            timings.update(exports_on_ray(jobs, executor, progress))
        for name, folder, kwargs in jobs if not executor.is_ray else []:
            t = time.perf_counter()
            export(out=folder, progress=progress, **kwargs)
            timings[f"export_{name}"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        result = evaluate(folders, prompt_set, stage / "evaluation", seed=seed, progress=progress, executor=executor)
        timings["evaluate"] = round(time.perf_counter() - t, 1)
        timings["total"] = round(time.perf_counter() - t0, 1)
        table = markdown_table(result)
        info = {"model": result.spec.model, "policies": names, "prompts": prompt_set.name,
                "n_prompts": len(prompt_set.prompts), "seed": seed, "steps": result.spec.steps,
                "guidance_scale": result.spec.guidance_scale, "calib_prompts": calib_prompts,
                "calib_steps": calib_steps or result.spec.steps, "verify_prompts": verify_prompts,
                "wall_s": timings, "table": table}
        (stage / COMPARE_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        (stage / "table.md").write_text(table + "\n", encoding="utf-8")
    return result, info


@contextmanager
def _session(executor: ExecutorSpec):
    """One Ray connection for the exports and the evaluation (nothing for the local executor)."""
    if not executor.is_ray:
        yield
        return
    from edgefusion.executors.ray_session import ray_session

    with ray_session(executor):
        yield
