"""The per-policy exports of ``compare_policies`` as Ray tasks, one export per task.

On one machine a task writes its export straight into the comparison's staging folder; across machines it exports
into a temporary folder on its node and returns the files, which the driver writes in place. An export is
all-or-nothing, so a task whose worker was killed leaves nothing but its (removed) staging folder, and Ray's retry
exports again.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from edgefusion.executors.spec import ExecutorSpec


def exports_on_ray(jobs: list[tuple[str, Path, dict]], executor: ExecutorSpec, progress: bool) -> dict[str, float]:
    """Run ``export(out=folder, **kwargs)`` for every ``(name, folder, kwargs)`` as a Ray task; returns
    ``{"export_<name>": seconds}``."""
    from edgefusion.executors.folders import ship_folders, unpack_folder
    from edgefusion.executors.ray_map import TASK_RETRIES, stream_tasks
    from edgefusion.executors.ray_session import ray_session, worker_count

    timings = {}
    with ray_session(executor) as ray:
        ship = ship_folders(ray)
        task = ray.remote(export_task).options(num_cpus=1, max_retries=TASK_RETRIES)

        def submit(i: int):
            _, folder, kwargs = jobs[i]
            return task.remote(kwargs, None if ship else str(folder))

        for i, res in stream_tasks(ray, submit, len(jobs), window=len(jobs), progress=progress,
                                   desc=f"exports ({worker_count(ray)} Ray workers)"):
            name, folder, _ = jobs[i]
            if res["files"] is not None:
                unpack_folder(res["files"], folder)
            timings[f"export_{name}"] = round(res["seconds"], 1)
    return timings


def export_task(kwargs: dict, out: str | None) -> dict:
    """One export (a Ray task): into ``out``, or, when ``out`` is ``None``, into a temporary folder whose files are
    returned (``{"seconds", "files"}``)."""
    from edgefusion.executors.folders import pack_folder
    from edgefusion.export.run_export import export

    t0 = time.perf_counter()
    if out is not None:
        for stale in [Path(out), *Path(out).parent.glob(f".{Path(out).name}.partial-*")]:
            shutil.rmtree(stale, ignore_errors=True)  # a retried task: what the killed try left
        export(out=out, progress=False, **kwargs)
        return {"seconds": time.perf_counter() - t0, "files": None}
    with tempfile.TemporaryDirectory(prefix="edgefusion-ray-export-") as tmp:
        export(out=Path(tmp) / "export", progress=False, **kwargs)
        return {"seconds": time.perf_counter() - t0, "files": pack_folder(Path(tmp) / "export")}
