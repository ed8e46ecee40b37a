"""AIMET-ONNX side of bench/quantize_vs_peers.py; runs in AIMET's own virtual environment (not edgefusion's).

Reads the float UNet, the calibration and held-out samples (``.npz`` written by edgefusion's CalibrationSet: keys
``unet/<i>/<input>``) and the timestep-path tensors to keep float; builds a ``QuantizationSimModel`` (int8 weights,
per-channel by AIMET's default config; int8 or int16 activations), calibrates it with one quant scheme (or SeqMSE
then min_max), runs the held-out samples through the simulation and writes the noise predictions to ``--out``
(``arr_<i>``). Prints one JSON line: wall time and peak RSS of the quantization, quantizer counts, settings.

Imports only numpy, onnx and aimet_onnx (and their dependencies): edgefusion is not installed here.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time

import numpy as np


def load_feeds(path: str) -> list[dict[str, np.ndarray]]:
    """UNet input dicts, in sample order, from a CalibrationSet ``.npz``."""
    with np.load(path) as data:
        by_index: dict[int, dict[str, np.ndarray]] = {}
        for key in data.files:
            comp, idx, name = key.split("/", 2)
            if comp == "unet":
                by_index.setdefault(int(idx), {})[name] = data[key]
    return [by_index[i] for i in sorted(by_index)]


def main() -> int:
    """Quantize with AIMET, evaluate the held-out samples, print the JSON result line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--float", required=True)
    ap.add_argument("--cal", required=True)
    ap.add_argument("--ver", required=True)
    ap.add_argument("--keep-float", required=True, help="prepare.json of the bench (float_path.tensors)")
    ap.add_argument("--scheme", required=True, choices=["min_max", "tf_enhanced", "percentile", "seq_mse"])
    ap.add_argument("--act-bits", type=int, choices=[8, 16], required=True)
    ap.add_argument("--seq-mse-candidates", type=int, default=20)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import onnx
    from aimet_onnx import QuantizationSimModel, apply_seq_mse

    keep = set(json.loads(open(args.keep_float).read())["float_path"]["tensors"])
    t = time.perf_counter()
    cal = load_feeds(args.cal)
    model = onnx.load(args.float)
    names = {i.name for i in model.graph.input}
    cal = [{k: v for k, v in f.items() if k in names} for f in cal]
    scheme = "min_max" if args.scheme == "seq_mse" else args.scheme
    tmp = tempfile.TemporaryDirectory(prefix="aimet-sim-")
    sim = QuantizationSimModel(model, param_type="int8", activation_type=f"int{args.act_bits}", quant_scheme=scheme,
                               config_file="default", path=tmp.name)
    del model
    disabled = 0
    for name, q in sim.qc_quantize_op_dict.items():
        if name in keep and q.enabled:
            q.enabled = False
            disabled += 1
    settings = {"config": "default (per-channel weights)", "scheme": scheme, "disabled_timestep_quantizers": disabled}
    if args.scheme == "percentile":
        pcts = {q._tensor_quantizer.getPercentileValue() for q in sim.qc_quantize_op_dict.values()  # noqa: SLF001
                if getattr(q, "_tensor_quantizer", None) is not None and hasattr(q._tensor_quantizer,  # noqa: SLF001
                                                                                  "getPercentileValue")}
        settings["percentile"] = sorted(pcts)
    if args.scheme == "seq_mse":
        apply_seq_mse(sim, cal, num_candidates=args.seq_mse_candidates)
        settings["seq_mse_candidates"] = args.seq_mse_candidates
    sim.compute_encodings(cal)
    wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    enabled = sum(1 for q in sim.qc_quantize_op_dict.values() if q.enabled)
    del cal
    ver = load_feeds(args.ver)
    outs = [sim.session.run(None, {k: v for k, v in f.items() if k in names})[0] for f in ver]
    np.savez(args.out, *outs)
    import aimet_onnx

    print(json.dumps({"wall_s": wall, "peak_rss_mb": rss, "enabled_quantizers": enabled, "settings": settings,
                      "aimet_onnx": aimet_onnx.__version__}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
