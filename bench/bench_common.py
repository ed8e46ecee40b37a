"""Shared by the quantizer benchmarks: one capture of float UNet + calibration/held-out samples, children measured
one process each (wall time, peak RSS), and a calibration reader that feeds onnxruntime's quantizer.

Imports only the standard library and numpy at module level: the orchestrating process must stay small, because a
child's ru_maxrss starts at its parent's size when it is forked.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from pathlib import Path


def rss_mb() -> float:
    """This process's peak resident set size so far, in MB (Linux ru_maxrss is in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def capture_unet_samples(model: str, samples: int, steps: int, verify: int, work: Path, seed: int = 0,
                         resolution: int | None = None, verify_seed: int | None = None) -> dict:
    """Build ``model``, capture UNet calibration and held-out samples, export the float UNet; writes into ``work``.

    Calibration takes ``samples // (branches * steps)`` prompts (at least one) of the model's own prompt file (the
    generic set when it has none), sampled with ``seed`` like the export does; held-out samples come from
    ``verify`` other prompts with ``verify_seed`` (default ``seed + 10000``, as the export). ``resolution``
    overrides the sampler's height and width (must be a multiple of 8 times the UNet's downsampling).
    Writes ``cal.npz/json``, ``ver.npz/json`` and ``float/model.onnx``; returns timings and counts.
    """
    from diffusers.utils import logging as dl
    from transformers.utils import logging as tl

    from edgefusion.calibration.capture import capture_calibration
    from edgefusion.calibration.prompts import read_prompts, split_prompts
    from edgefusion.models.torch_to_onnx import export_component
    from edgefusion.models.source import load_pipeline, resolve_model_source

    dl.set_verbosity_error()
    tl.set_verbosity_error()
    src = resolve_model_source(model)
    pipe = load_pipeline(src, quiet=True)
    s = src.sampler
    h = w = resolution if resolution else None
    h, w = h or s.height, w or s.width
    branches = 2 if s.guidance_scale > 1.0 else 1
    n_prompts = max(1, samples // (branches * steps))
    cal_p, ver_p = split_prompts(read_prompts(src.prompts_file), n_prompts, verify)
    ver_seed = seed + 10_000 if verify_seed is None else verify_seed
    t = time.perf_counter()
    cal = capture_calibration(pipe, cal_p, steps, s.guidance_scale, h, w, seed=seed, progress=False)
    ver = capture_calibration(pipe, ver_p, steps, s.guidance_scale, h, w, seed=ver_seed, progress=False)
    t_cal = time.perf_counter() - t
    cal.samples["unet"] = cal.samples["unet"][:samples]
    cal.save(work / "cal")
    ver.save(work / "ver")
    t = time.perf_counter()
    export_component(pipe, "unet", cal.samples["unet"][0].inputs, work / "float" / "model.onnx")
    t_exp = time.perf_counter() - t
    return {"model": model, "random_weights": src.random_weights, "height": h, "width": w, "steps": steps,
            "guidance_scale": s.guidance_scale, "seed": seed, "verify_seed": ver_seed,
            "calibration_prompts": len(cal_p), "verify_prompts": len(ver_p), "calibration_s": t_cal,
            "export_s": t_exp, "cal_samples": len(cal.samples["unet"]), "verify_samples": len(ver.samples["unet"]),
            "digest": cal.digest()}


def _oom_first() -> None:
    """Make a child the out-of-memory killer's first choice (a peer's calibrator can outgrow the machine)."""
    try:
        Path("/proc/self/oom_score_adj").write_text("1000")
    except OSError:
        pass


def run_measured(cmd: list[str], log: Path, timeout_s: float | None = None) -> dict:
    """Run ``cmd`` as its own process; its last stdout line must be a JSON object, which is returned with
    ``process_peak_rss_mb`` (the child's own ru_maxrss from wait4) and ``process_wall_s`` added, or
    ``{"error": ...}`` when it failed (the last line of its stderr, or the signal that killed it).

    stdout/stderr go to ``log``.out/.err so the child's peak RSS is measured for that process alone.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    out, err = log.with_suffix(".out"), log.with_suffix(".err")
    t = time.perf_counter()
    with out.open("w") as fo, err.open("w") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, preexec_fn=_oom_first)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    peak = usage.ru_maxrss / 1024.0
    if proc.returncode != 0:
        if deadline is not None and time.monotonic() > deadline:
            why = f"timed out after {timeout_s:.0f} s"
        elif proc.returncode == -9:
            why = "killed (SIGKILL: out of memory)"
        else:
            lines = [ln for ln in err.read_text(errors="replace").strip().splitlines() if ln.strip()]
            why = lines[-1][:300] if lines else f"exit status {proc.returncode}"
        return {"error": why, "returncode": proc.returncode, "process_peak_rss_mb": peak, "process_wall_s": wall}
    lines = out.read_text().strip().splitlines()
    try:
        res = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": f"no result line (see {out})", "returncode": 0, "process_peak_rss_mb": peak,
                "process_wall_s": wall}
    return {**res, "process_peak_rss_mb": peak, "process_wall_s": wall}


def ort_reader(feeds: list[dict]):
    """An onnxruntime ``CalibrationDataReader`` over ``feeds`` that also supports ``set_range`` and ``len`` (so
    quantize_static's ``CalibStridedMinMax`` can calibrate in chunks with bounded memory)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self.set_range(0, len(feeds))

        def __len__(self):
            return len(feeds)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.it = iter(feeds[start_index:end_index])

        def get_next(self):
            return next(self.it, None)

    return _Reader()
