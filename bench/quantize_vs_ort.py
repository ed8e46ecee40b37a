"""Benchmark: edgefusion's streaming quantizer vs onnxruntime's quantize_static on one preset's UNet.

Both start from the same float ONNX UNet, the same calibration samples (timestep-aware, from the real sampler) and
the same per-node precision assignment (the `default` policy resolved by edgefusion: W8A8 nodes -> uint8/int8,
16-bit tensors -> TensorQuantOverrides QUInt16, FP16/FP32 layers excluded, since onnxruntime has no fp16
simulation). Each side runs in its own process so its peak RSS (ru_maxrss) is its own. Printed: wall time, peak
RSS and UNet SQNR vs the float graph on held-out samples, and the ratios ours/ORT; plus `default` vs `w8a8`.

    python bench/quantize_vs_ort.py --preset bk-sdm-tiny --samples 32
    python bench/quantize_vs_ort.py --preset sd-v1.5 --samples 32 --skip-ort   # ORT needs > 18 GB here
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import capture_unet_samples, ort_reader, rss_mb, run_measured  # noqa: E402


def prepare(preset: str, samples: int, steps: int, verify: int, work: Path) -> dict:
    """Build the preset, capture calibration + verification sets, export the float UNet (child process)."""
    return capture_unet_samples(preset, samples, steps, verify, work, verify_seed=999)


def child(side: str, work: Path, policy: str) -> dict:
    """Run one side in this process; returns timings, RSS and outputs' SQNR."""
    from edgefusion.calibration.capture import CalibrationSet
    from edgefusion.metrics import mean_sqnr_db
    from edgefusion.quant.policy import load_policy
    from edgefusion.runtime.session import open_session, run_session

    cal = CalibrationSet.load(work / "cal")
    ver = CalibrationSet.load(work / "ver")
    fpath = work / "float" / "model.onnx"
    out = work / f"{side}-{policy}" / "model.onnx"
    out.parent.mkdir(exist_ok=True)
    rss0 = rss_mb()
    t = time.perf_counter()
    if side == "ours":
        from edgefusion.quant.quantize_graph import quantize_graph

        quantize_graph(fpath, out, "unet", load_policy(policy), (s.inputs for s in cal.samples["unet"]))
    elif side == "ort":
        _ort_quantize(fpath, out, load_policy(policy), cal)
    else:  # float reference outputs
        out = fpath
    wall = time.perf_counter() - t
    rss = rss_mb()
    sess = open_session(out)
    outs = [run_session(sess, s.inputs)[0] for s in ver.samples["unet"]]
    del sess
    ref_file = work / "float_outputs.npz"
    if side == "float":
        np.savez(ref_file, *outs)
        sq = None
    else:
        ref = np.load(ref_file)
        sq = mean_sqnr_db([ref[f"arr_{i}"] for i in range(len(outs))], outs)
    return {"wall_s": wall, "peak_rss_mb": rss, "rss_before_mb": rss0, "sqnr_db": sq}


def _ort_quantize(fpath: Path, out: Path, spec, cal) -> None:
    """onnxruntime's quantize_static with edgefusion's precision assignment."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from edgefusion.quant.graph_index import GraphIndex
    from edgefusion.quant.layers import find_layers
    from edgefusion.quant.plan import plan_quantization
    from edgefusion.quant.policy import resolve_policy

    model = onnx.load(str(fpath), load_external_data=False)
    layers = find_layers(model, "unet")
    resolved = resolve_policy(spec, layers)
    plan = plan_quantization(model, layers, resolved, GraphIndex.build(model))
    nodes = [n for layer in layers if not layer.passthrough and resolved.precisions[layer.name].is_integer
             for n in layer.nodes]
    op_types = sorted({n.op_type for n in model.graph.node if n.name in set(nodes)})
    overrides = {t: [{"quant_type": QuantType.QUInt16}] for t, b in plan.act_bits.items() if b == 16}
    del model

    quantize_static(str(fpath), str(out), ort_reader([s.inputs for s in cal.samples["unet"]]),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_quantize=nodes, use_external_data_format=True,
                    extra_options={"TensorQuantOverrides": overrides, "ActivationSymmetric": False,
                                   "WeightSymmetric": True})


def _run_child(side: str, work: Path, policy: str) -> dict:
    return run_measured([sys.executable, __file__, "--child", side, "--work", str(work), "--policy", policy],
                        work / "logs" / f"{side}-{policy}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="bk-sdm-tiny")
    ap.add_argument("--samples", type=int, default=32, help="UNet calibration samples")
    ap.add_argument("--steps", type=int, default=2, help="denoising steps sampled per prompt")
    ap.add_argument("--verify", type=int, default=1, help="held-out prompts (x steps x 2 UNet samples)")
    ap.add_argument("--skip-ort", action="store_true")
    ap.add_argument("--work", default=None)
    ap.add_argument("--child", choices=["prepare", "ours", "ort", "float"])
    ap.add_argument("--policy", default="default")
    args = ap.parse_args()
    if args.child == "prepare":
        print(json.dumps(prepare(args.preset, args.samples, args.steps, args.verify, Path(args.work))))
        return 0
    if args.child:
        print(json.dumps(child(args.child, Path(args.work), args.policy)))
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="ef-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    # the float model lives in its own process: a child's ru_maxrss starts at its parent's size when forked,
    # so this process must stay small for the children's peak RSS to be their own
    info = run_measured([sys.executable, __file__, "--child", "prepare", "--work", str(work), "--preset", args.preset,
                         "--samples", str(args.samples), "--steps", str(args.steps), "--verify", str(args.verify)],
                        work / "logs" / "prepare")
    if "error" in info:
        raise SystemExit(f"prepare failed: {info['error']}")
    print(f"[{args.preset}] calibration capture {info['calibration_s']:.1f} s, float UNet export "
          f"{info['export_s']:.1f} s, {info['cal_samples']} calibration / {info['verify_samples']} held-out samples",
          flush=True)
    results = {"float": _run_child("float", work, "default"), "ours": _run_child("ours", work, "default"),
               "ours_w8a8": _run_child("ours", work, "w8a8")}
    if not args.skip_ort:
        results["ort"] = _run_child("ort", work, "default")
    print(json.dumps({"preset": args.preset, **info, **results}, indent=1))
    o = results["ours"]
    print(f"\n| {args.preset} UNet, {info['cal_samples']} samples | wall s | peak RSS MB | SQNR dB |")
    print("|---|---|---|---|")
    print(f"| edgefusion (default policy) | {o['wall_s']:.1f} | {o['peak_rss_mb']:.0f} | {o['sqnr_db']:.2f} |")
    r = results.get("ort")
    if r and "error" not in r:
        print(f"| onnxruntime quantize_static | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['sqnr_db']:.2f} |")
        print(f"| ratio ours/ORT | {o['wall_s'] / r['wall_s']:.2f} | {o['peak_rss_mb'] / r['peak_rss_mb']:.2f} | "
              f"{o['sqnr_db'] - r['sqnr_db']:+.2f} dB |")
    elif r:
        print(f"| onnxruntime quantize_static | failed: {r['error']} | | |")
    w = results["ours_w8a8"]
    print(f"\ndefault vs w8a8 UNet SQNR: {o['sqnr_db']:.2f} dB vs {w['sqnr_db']:.2f} dB "
          f"({o['sqnr_db'] - w['sqnr_db']:+.2f} dB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
