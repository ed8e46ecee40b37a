"""The sensitivity sweep on Ray: chunks of samples as tasks, per-source noise energies added as they come back.

The samples left to profile are cut into the same chunks the local sweep makes (the memory budget's
``per_chunk``), one task per chunk with the local sweep's probe seed, so each sample's estimate is the local one and
energies of disjoint samples add (see :func:`plan_pieces` on why chunks are not cut smaller). The float graph reaches the
workers by path on one machine, through the object store across machines; the samples and the driver's sites and
calibration ranges go through the object store once. The report is saved as pieces finish (at most every few
seconds): a driver that dies resumes from it like a local run.
"""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path

import numpy as np

from edgefusion.executors.spec import ExecutorSpec
from edgefusion.sensitivity.report import SensitivityReport
from edgefusion.sensitivity.simulate import Chunk, Simulator

PIECES_PER_WORKER = 2  # unused while every task is a whole chunk (see plan_pieces)
SAVE_EVERY_S = 2.0


def plan_pieces(todo: list[int], per_chunk: int, workers: int,
                per_worker: int = PIECES_PER_WORKER) -> list[tuple[list[int], int, int, int]]:
    """``(sample indices, chunk start sample, chunk size, offset in the chunk)`` per task: the local sweep's chunks
    of ``todo`` (``per_chunk`` samples each), one task each.

    Cutting a chunk into smaller pieces (``linear_noise(probe_rows=...)`` draws the chunk's probes for them) gave
    per-sample estimates that differ from the whole chunk's far beyond float rounding on the embedded model and on
    ``tiny``; until that is understood every task is a whole chunk, so the Ray sweep equals the local one within
    float summation tolerance, and it runs in parallel only when there are several chunks. ``workers`` and
    ``per_worker`` are kept for when pieces come back."""
    del workers, per_worker
    return [(todo[i:i + per_chunk], todo[i], len(todo[i:i + per_chunk]), 0) for i in range(0, len(todo), per_chunk)]


def sweep_on_ray(sim: Simulator, report: SensitivityReport, path: Path, probes: int, seed: int, progress: bool,
                 executor: ExecutorSpec) -> SensitivityReport:
    """:func:`~edgefusion.sensitivity.profiler.sweep` with the samples' chunks as Ray tasks (same contract)."""
    from edgefusion.executors.folders import share_folder, ship_folders
    from edgefusion.executors.ray_map import TASK_RETRIES, stream_tasks
    from edgefusion.executors.ray_session import ray_session, worker_count

    col = {s: i for i, s in enumerate(report.steps)}
    done = set(report.done_samples)
    todo = [i for i in report.profiled_samples if i not in done]
    report.save(path)
    if not todo:
        return report
    signal = sim.signal()
    with ray_session(executor) as ray:
        t0 = last_save = time.perf_counter()
        workers = worker_count(ray)
        state = {"run": uuid.uuid4().hex, "graph": share_folder(ray, sim.path.parent, ship_folders(ray)),
                 "file": sim.path.name, "sites": sim.sites, "output": sim.output, "range_rules": sim.range_rules,
                 "memory_mb": sim.memory_mb}
        state_ref = ray.put(state)
        feeds_ref = ray.put({i: {k: np.ascontiguousarray(sim.samples[i].inputs[k]) for k in sim.graph.input_names}
                             for i in todo})
        pieces = plan_pieces(todo, sim.per_chunk, workers)
        task = ray.remote(noise_piece_task).options(num_cpus=1, max_retries=TASK_RETRIES)

        def submit(u: int):
            idx, start, total, off = pieces[u]
            return task.remote(state_ref, feeds_ref, idx, probes, seed + start, (total, off))

        for u, est in stream_tasks(ray, submit, len(pieces), window=2 * workers, progress=progress,
                                   desc=f"sensitivity ({workers} Ray workers)", weight=lambda u: len(pieces[u][0]),
                                   total=len(todo)):
            idx = pieces[u][0]
            cols = [col[int(sim.samples[i].step or 0)] for i in idx]
            for key, vals in est.items():
                row = report.noise.setdefault(key, [0.0] * len(report.steps))
                for c, v in zip(cols, vals):
                    row[c] += float(v)
            for c, i in zip(cols, idx):
                report.signal[c] += float(signal[i])
            done.update(idx)
            report.done_samples = sorted(done)
            now = time.perf_counter()
            if now - last_save >= SAVE_EVERY_S or len(done) == len(report.profiled_samples):
                report.timings_s["sweep"] = round(report.timings_s.get("sweep", 0.0) + now - t0, 3)
                t0 = last_save = now
                report.save(path)
    report.timings_s["sweep"] = round(report.timings_s.get("sweep", 0.0) + time.perf_counter() - t0, 3)
    report.save(path)
    return report


# ---- inside a worker process

class _PieceSimulator:
    """What :func:`linear_noise` reads of a :class:`Simulator`, rebuilt in a worker: the float graph, its sites,
    the driver's calibration ranges and the quantized-weight cache (the same methods as the driver's)."""

    weight = Simulator.weight
    range_for = Simulator.range_for

    def __init__(self, state: dict):
        from edgefusion.executors.folders import local_path
        from edgefusion.sensitivity.torch_graph import TorchGraph

        self.graph = TorchGraph(local_path(state["graph"]) / state["file"])
        self.sites, self.output = state["sites"], state["output"]
        self.range_rules, self.memory_mb = state["range_rules"], state["memory_mb"]
        self._wcache: dict = {}
        self.weight_bytes = sum(w.numel() * 4 for w in self.graph.weights.values())


_STATE: dict = {}


def noise_piece_task(state: dict, feeds: dict, indices: list[int], probes: int, probe_seed: int,
                     probe_rows: tuple[int, int]) -> dict[str, np.ndarray]:
    """Per-source noise energies of the samples ``indices`` (a Ray task): ``key -> [len(indices)]``."""
    import ray
    import torch

    from edgefusion.executors.ray_session import assigned_cpus
    from edgefusion.sensitivity.linear_noise import linear_noise

    if _STATE.get("run") != state["run"]:
        _STATE.clear()
        torch.set_num_threads(assigned_cpus(ray))
        _STATE.update(run=state["run"], sim=_PieceSimulator(state))
    sim = _STATE["sim"]
    chunk = Chunk(list(indices), {k: torch.cat([torch.from_numpy(np.array(feeds[i][k])) for i in indices])
                                  for k in sim.graph.input_names})
    return linear_noise(sim, chunk, probes, seed=probe_seed, probe_rows=probe_rows)
