"""Run a heavy stage in a fresh (spawned) process, so its memory is returned to the system when it ends.

The export's torch stage (float model, calibration, ONNX export) and its onnxruntime stage (verification, range
collection, QDQ emission) never share a process: peak RSS is that of the larger stage, not of both plus what the
allocator keeps. Errors come back as the same one-line :class:`EdgeFusionError`.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import tempfile
import traceback
from pathlib import Path
from typing import Callable

from edgefusion.errors import EdgeFusionError


def _child(fn: Callable, args: tuple, kwargs: dict, result: str) -> None:
    try:
        value = fn(*args, **kwargs)
        out = {"ok": value}
    except EdgeFusionError as err:
        out = {"error": str(err), "user": True}
    except BaseException as err:  # report, the parent raises
        out = {"error": f"{type(err).__name__}: {err}", "user": False, "traceback": traceback.format_exc()}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    Path(result).write_text(json.dumps(out))


def run_isolated(fn: Callable, *args, **kwargs) -> tuple[object, float]:
    """Call ``fn(*args, **kwargs)`` (a module-level function with JSON-able result) in a spawned process.

    Returns ``(result, peak RSS of the child in MB)``.
    """
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="edgefusion-") as tmp:
        result = Path(tmp) / "result.json"
        proc = ctx.Process(target=_child, args=(fn, args, kwargs, str(result)))
        proc.start()
        try:
            proc.join()
        except BaseException:  # interrupted: do not leave the child writing into a folder being removed
            proc.terminate()
            proc.join()
            raise
        if not result.is_file():
            hint = "it was killed, most likely out of memory" if proc.exitcode in (-9, 137) else "it crashed"
            raise EdgeFusionError(f"the {fn.__name__.strip('_')} process ended with status {proc.exitcode} ({hint})",
                                  "free memory or use a smaller model/resolution, then retry")
        out = json.loads(result.read_text())
    if "error" in out:
        if out["user"]:
            raise EdgeFusionError(out["error"])
        raise RuntimeError(f"{out['error']}\n--- in the {fn.__name__} process:\n{out.get('traceback', '')}")
    return out["ok"], out["peak_rss_mb"]
