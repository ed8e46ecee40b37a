"""Benchmark: --executor local vs --executor ray (a local Ray instance with N workers) on the embedded model.

1. ``edgefusion profile`` of the embedded model (default flags): wall time of the whole command, the sweep's own
   seconds (the part that runs as Ray tasks), peak RSS of the driver (the process that calls ``ray.init``: the
   profile's stage process) and of the command's main process.
2. ``eval/evaluate.py`` of one embedded ``default`` export (made once, first) on ``held-out:N`` prompts (default 40):
   wall time, peak RSS of the driver (this child process), and whether the Ray run's records, summary and FID-free
   figures equal the local run's.

Each measurement runs in its own child process (``ru_maxrss`` is per process); the local runs use every core
(their usual threads), each Ray worker one. Prints one table with the ratios
Ray / local; ``--json FILE`` also writes the figures.

    python bench/ray_scaleout.py [--workers 2] [--prompts 40] [--work DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_mb() -> float:
    """This process's peak resident set size so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def executor(kind: str, workers: int):
    from edgefusion.executors.spec import ExecutorSpec

    return ExecutorSpec("ray", None, workers) if kind == "ray" else ExecutorSpec()


def child_profile(kind: str, workers: int, out: Path) -> dict:
    from edgefusion.sensitivity.run_profile import profile

    t0 = time.perf_counter()
    report = profile(model="embedded", out=out, progress=False, executor=executor(kind, workers))
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 2), "sweep_s": report.timings_s.get("sweep"),
            "driver_rss_mb": report.timings_s.get("profile_peak_rss_mb"), "main_rss_mb": round(rss_mb(), 1),
            "noise": report.noise}


def child_eval(kind: str, workers: int, export: Path, prompts: int, out: Path) -> dict:
    from edgefusion.evaluation.prompts import load_prompt_set
    from edgefusion.evaluation.run import evaluate

    t0 = time.perf_counter()
    result = evaluate([export], load_prompt_set(f"held-out:{prompts}", 0), out, progress=False,
                      executor=executor(kind, workers))
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 2), "driver_rss_mb": round(rss_mb(), 1),
            "records": {k: [vars(r) for r in recs] for k, recs in result.records.items()},
            "summary": result.summary}


def run_child(args: list[str]) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    res = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env,
                         check=False)
    if res.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def versions() -> dict:
    import numpy
    import onnxruntime
    import ray
    import torch

    return {"python": platform.python_version(), "ray": ray.__version__, "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__, "cores": os.cpu_count()}


def max_rel_diff(a: dict, b: dict) -> float:
    worst = 0.0
    for k, row in a.items():
        for x, y in zip(row, b[k]):
            if x != y:
                worst = max(worst, abs(x - y) / max(abs(x), abs(y)))
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--work", default=None, help="folder for the export and outputs (default: a temporary one)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--reuse", action="store_true", help="keep figures an earlier run saved in --work")
    ap.add_argument("--child", nargs="+", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        what, kind, *rest = args.child
        if what == "profile":
            out = child_profile(kind, args.workers, Path(rest[0]))
        elif what == "export":
            from edgefusion.export.run_export import export

            export(model="embedded", out=rest[0], progress=False)
            out = {}
        else:
            out = child_eval(kind, args.workers, Path(rest[0]), args.prompts, Path(rest[1]))
        print(json.dumps(out))
        return 0

    work = Path(args.work or tempfile.mkdtemp(prefix="ray-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    export_dir = work / "export-default"
    if not (export_dir / "manifest.json").is_file():
        t = time.perf_counter()
        run_child(["export", "local", str(export_dir)])
        print(f"embedded default export: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    load0 = os.getloadavg()
    figures: dict = {"versions": versions(), "workers": args.workers, "prompts": args.prompts}
    for what in ("profile", "evaluate"):
        for kind in ("local", "ray"):
            out, saved = work / f"{what}-{kind}", work / f"{what}-{kind}.json"
            if args.reuse and saved.is_file():  # measured by an earlier run of this script in this --work
                figures[f"{what}_{kind}"] = json.loads(saved.read_text())
                continue
            if out.exists():
                import shutil

                shutil.rmtree(out)
            child = ["profile", kind, str(out)] if what == "profile" else ["eval", kind, str(export_dir), str(out)]
            figures[f"{what}_{kind}"] = run_child(child)
            saved.write_text(json.dumps(figures[f"{what}_{kind}"]))
            print(f"{what} {kind}: {figures[f'{what}_{kind}']['wall_s']} s", file=sys.stderr)
    figures["load_before"] = [round(x, 2) for x in load0]
    figures["load_after"] = [round(x, 2) for x in os.getloadavg()]
    pl, pr = figures["profile_local"], figures["profile_ray"]
    el, er = figures["evaluate_local"], figures["evaluate_ray"]
    figures["profile_max_rel_diff"] = max_rel_diff(pl.pop("noise"), pr.pop("noise"))
    same_records = el.pop("records") == er.pop("records")
    figures["evaluate_identical"] = same_records and el.pop("summary") == er.pop("summary")
    v = figures["versions"]
    print(f"Ray {v['ray']}, torch {v['torch']}, onnxruntime {v['onnxruntime']}, Python {v['python']}, "
          f"{v['cores']} cores; Ray: local instance, {args.workers} workers; load average before "
          f"{figures['load_before']}, after {figures['load_after']}")
    print("| run | local | ray | ray / local | driver peak RSS local / ray |")
    print("|---|---|---|---|---|")
    print(f"| embedded `profile`, whole command | {pl['wall_s']:.1f} s | {pr['wall_s']:.1f} s | "
          f"{pr['wall_s'] / pl['wall_s']:.2f} | {pl['driver_rss_mb']:.0f} / {pr['driver_rss_mb']:.0f} MB (stage "
          f"process; main {pl['main_rss_mb']:.0f} / {pr['main_rss_mb']:.0f} MB) |")
    print(f"| embedded `profile`, sweep only | {pl['sweep_s']:.1f} s | {pr['sweep_s']:.1f} s | "
          f"{pr['sweep_s'] / pl['sweep_s']:.2f} | |")
    print(f"| `evaluate.py`, {args.prompts} prompts, embedded `default` export | {el['wall_s']:.1f} s | "
          f"{er['wall_s']:.1f} s | {er['wall_s'] / el['wall_s']:.2f} | {el['driver_rss_mb']:.0f} / "
          f"{er['driver_rss_mb']:.0f} MB |")
    print(f"evaluation records and summary identical: {figures['evaluate_identical']}; profile noise energies: "
          f"largest relative difference {figures['profile_max_rel_diff']:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
