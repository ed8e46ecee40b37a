"""Benchmark: the sensitivity profiler's speed against a naive sweep, and its predictions against QDQ graphs.

1. Runs ``edgefusion profile`` (own process, timed) and reads the report's timings.
2. Naive baseline: one onnxruntime forward of the float UNet per layer x candidate precision x profiled sample
   (what re-running a QDQ graph per layer costs at the very least), timed on a few forwards and multiplied out.
3. ``--fidelity``: the exporter's ``quantize_graph`` builds the QDQ UNet for ``default``, ``w8a8`` and the
   automatic policy from the profile's float graph and calibration set; onnxruntime runs it on the profiled
   held-out samples. Printed beside the profiler's first-order prediction and its fake-quant simulation.
4. ``--export``: ``edgefusion export`` at the model's own resolution with ``default`` and with
   ``--mpq-policy auto --sensitivity <report>`` (same calibration flags); the manifests' measured UNet SQNR beside
   the prediction (this is the check of a profile made at a lower ``--resolution``).

    python bench/sensitivity.py --preset embedded --fidelity
    python bench/sensitivity.py --preset sd-v1.5 --resolution 256 --calib-prompts 1 --calib-steps 2 --verify-prompts 1
    python bench/sensitivity.py --preset bk-sdm-tiny --resolution 256 --calib-prompts 1 --calib-steps 2 \\
        --verify-prompts 1 --fidelity --export
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def load() -> str:
    """The 1/5/15-minute load averages (what else was running)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def naive_seconds(float_unet: Path, samples, layers: int, candidates: int, n: int) -> tuple[float, float]:
    """(seconds per onnxruntime forward, naive sweep estimate in seconds)."""
    from edgefusion.runtime.session import open_session, run_session

    sess = open_session(float_unet)
    run_session(sess, samples[0].inputs)  # warm-up
    t = time.perf_counter()
    k = min(3, len(samples))
    for s in samples[:k]:
        run_session(sess, s.inputs)
    per = (time.perf_counter() - t) / k
    return per, per * layers * candidates * n


def fidelity(out: Path, work: Path, report) -> list[dict]:
    """Predicted / simulated / measured UNet SQNR on the profiled held-out samples."""
    from edgefusion.calibration.capture import CalibrationSet
    from edgefusion.metrics import mean_sqnr_db
    from edgefusion.quant.policy import load_policy
    from edgefusion.quant.quantize_graph import quantize_graph
    from edgefusion.runtime.session import open_session, run_session

    cal = CalibrationSet.load(work / "cal")
    held_set = work / "heldout" if (work / "heldout.json").is_file() else work / "cal"
    held = [CalibrationSet.load(held_set).samples["unet"][i] for i in report.profiled_samples]
    float_unet = work / "unet" / "model.onnx"
    sess = open_session(float_unet)
    ref = [run_session(sess, s.inputs)[0] for s in held]
    del sess
    simulated = {k: v["simulated_db"] for k, v in report.checks.get("policies", {}).items()}
    auto = report.checks.get("auto_policy", {})
    simulated["auto"] = auto.get("simulated_db")
    whole = {k: v.get("whole_model_cost") for k, v in auto.get("presets", {}).items()}
    whole["auto"] = auto.get("whole_model_cost")
    unit = report.cost_model().unit
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("default", "w8a8", "auto"):
            spec = load_policy(out / "auto_policy.yaml" if name == "auto" else name)
            # weights rounded to nearest, as the profiler models them (the export's GPTQ gains on top)
            qg = quantize_graph(float_unet, Path(tmp) / "q.onnx", "unet", spec, (s.inputs for s in cal.samples["unet"]),
                                weight_rounding="nearest")
            qs = open_session(qg.path)
            measured = mean_sqnr_db(ref, [run_session(qs, s.inputs)[0] for s in held])
            del qs
            pred = report.predict(report.resolve(spec))
            rows.append({"policy": name, "first-order dB": round(pred["sqnr_db"], 2),
                         "simulated dB": simulated.get(name), "ORT QDQ dB": round(measured, 2),
                         "first-order - ORT": round(pred["sqnr_db"] - measured, 2),
                         f"cost, table ({unit})": round(pred["cost"], 4),
                         f"cost, whole model ({unit})": whole.get(name)})
    return rows


def export_check(args, out: Path, report) -> list[dict]:
    """Exports at the model's own size: default and auto from the report; manifest UNet SQNR vs prediction."""
    from edgefusion.quant.policy import load_policy

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("default", []), ("auto", ["--sensitivity", str(out)])):
            folder = Path(tmp) / name
            cmd = [sys.executable, "-m", "edgefusion", "export", "--model", args.preset, "--out", str(folder),
                   "--mpq-policy", name, "--calib-prompts", str(args.calib_prompts), "--verify-prompts",
                   str(args.verify_prompts), "--no-progress", "--json", *extra,
                   *(["--no-tiling"] if args.no_tiling else [])]
            if args.calib_steps:
                cmd += ["--calib-steps", str(args.calib_steps)]
            t = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode:
                print(f"{name} export failed: {res.stderr.strip().splitlines()[-1]}")
                continue
            m = json.loads(res.stdout)
            spec = load_policy(out / "auto_policy.yaml" if name == "auto" else name)
            pred = report.predict(report.resolve(spec))
            rows.append({"policy": name, "export s": round(time.perf_counter() - t, 1),
                         "predicted dB (profile)": round(pred["sqnr_db"], 2),
                         "export measured dB": m["components"]["unet"]["quant_vs_torch_sqnr_db"],
                         f"predicted cost ({report.cost_model().unit})": round(pred["cost"], 2),
                         "export UNet ms/image (QDQ graph)": round(m["latency"]["components"]["unet"]["ms"]
                                                                   * m["latency"]["components"]["unet"]["calls"], 2),
                         "attention sites tiled": len((m.get("tiling") or {}).get("sites") or {}),
                         "size": f"{m['shapes']['height']}x{m['shapes']['width']}"})
    return rows


def main() -> None:
    """Run and print."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="embedded")
    ap.add_argument("--resolution", type=int, default=None)
    ap.add_argument("--calib-prompts", type=int, default=8)
    ap.add_argument("--calib-steps", type=int, default=None)
    ap.add_argument("--verify-prompts", type=int, default=2)
    ap.add_argument("--probes", type=int, default=4)
    ap.add_argument("--fidelity", action="store_true")
    ap.add_argument("--export", action="store_true")
    ap.add_argument("--no-tiling", action="store_true", help="exports without attention tiling")
    ap.add_argument("--out", default=None, help="keep the report here (default: a temporary folder)")
    args = ap.parse_args()
    from edgefusion.sensitivity.report import SensitivityReport
    from edgefusion.sensitivity.table import format_table

    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} "
          f"EDGEFUSION_ORT_THREADS={os.environ.get('EDGEFUSION_ORT_THREADS', 'unset')}; cores {os.cpu_count()}; "
          f"load at start {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "profile"
        cmd = [sys.executable, "-m", "edgefusion", "profile", "--model", args.preset, "--out", str(out),
               "--calib-prompts", str(args.calib_prompts), "--verify-prompts", str(args.verify_prompts),
               "--probes", str(args.probes), "--keep-work", "--no-progress", "--overwrite"]
        if args.resolution:
            cmd += ["--resolution", str(args.resolution)]
        if args.calib_steps:
            cmd += ["--calib-steps", str(args.calib_steps)]
        t = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t
        if res.returncode:
            sys.exit(res.stderr[-2000:])
        print(res.stdout)
        print(f"load after profile {load()}")
        report = SensitivityReport.load(out)
        tm = report.timings_s
        work = out / ".work"
        from edgefusion.calibration.capture import CalibrationSet

        held_set = work / "heldout" if (work / "heldout.json").is_file() else work / "cal"
        samples = [CalibrationSet.load(held_set).samples["unet"][i] for i in report.profiled_samples]
        per, naive = naive_seconds(work / "unet" / "model.onnx", samples, len(report.sites.op_types), 2,
                                   len(report.done_samples))
        cal = report.provenance.calibration
        print(format_table([{
            "model": args.preset, "size": f"{cal['height']}x{cal['width']}", "layers": len(report.sites.op_types),
            "profiled samples": len(report.done_samples), "probes": report.provenance.method["probes"],
            "sweep s": tm.get("sweep"), "refine+checks s": round(tm.get("refine", 0) + tm.get("checks", 0), 1),
            "latency table s": tm.get("latency_table"), "profile command s": round(wall, 1), "ORT forward s": round(per, 2),
            "naive sweep s (2 precisions)": round(naive), "naive / ours (sweep)": round(naive / tm["sweep"], 1),
            "peak RSS MB": tm.get("profile_peak_rss_mb")}]))
        if args.fidelity:
            print("\nWhole-policy UNet SQNR on the profiled held-out samples:")
            print(format_table(fidelity(out, work, report)))
        if args.export:
            print("\nExports at the model's own size (manifest: quantized vs PyTorch, held-out):")
            print(format_table(export_check(args, out, report)))
        print(f"load at end {load()}")


if __name__ == "__main__":
    main()
