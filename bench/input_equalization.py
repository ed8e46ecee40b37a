"""Does a per-channel quantizer for the UNet's input latent help at W8A8? Side by side, on held-out samples.

At W8A8 the 8-bit input latent carries a share of the UNet's output noise (README "Fidelity"), and its four channels
have different ranges. This quantizes the UNet under ``w8a8`` (the export's way), then rewrites only the input's
quantizer and prints the SQNR against the float graph on held-out samples for:

* ``per tensor``: as exported (one scale and zero point);
* ``equalised``: one zero point, a scale per channel proportional to the channel's peak: exactly what scaling each
  input channel by 1/s (a float Mul ahead of the quantizer) and ``conv_in``'s weights by s would give;
* ``per channel``: a scale and zero point per channel from each channel's own calibration range (an upper bound).

    python bench/input_equalization.py                 # embedded model, 8 + 8 prompts
    python bench/input_equalization.py --work DIR      # keep (or reuse the layout of) bench/fidelity.py's captures
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _with_input_quantizer(qdq: Path, out: Path, scales: np.ndarray, zero_points: np.ndarray) -> Path:
    """A copy of the QDQ graph ``qdq`` whose ``sample`` quantizer is per channel (axis 1) with these parameters."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(qdq))
    inits = {t.name: t for t in m.graph.initializer}
    zp_type = numpy_helper.to_array(inits["sample_zero_point"]).dtype
    for n in m.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[1] == "sample_scale":
            n.attribute.append(helper.make_attribute("axis", 1))
    inits["sample_scale"].CopyFrom(numpy_helper.from_array(scales.astype(np.float32), "sample_scale"))
    inits["sample_zero_point"].CopyFrom(numpy_helper.from_array(zero_points.astype(zp_type), "sample_zero_point"))
    onnx.save(m, str(out))
    return out


def main(argv=None) -> int:
    from fidelity import add_capture_arguments, captured_w8a8_unet

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_capture_arguments(ap)
    ap.add_argument("--method", default="minmax", help="range method for the rest of the graph")
    args = ap.parse_args(argv)

    from edgefusion.metrics import mean_sqnr_db
    from edgefusion.runtime.session import open_session, run_session

    tmp, cal, held, fpath, qg = captured_w8a8_unet(args, "eq")
    x = np.stack([s.inputs["sample"][0] for s in cal.samples["unet"]])
    lo, hi = np.minimum(x.min(axis=(0, 2, 3)), 0), np.maximum(x.max(axis=(0, 2, 3)), 0)
    qmax = 255.0
    peak = np.maximum(-lo, hi)
    s = peak / peak.max()  # channel c is divided by s[c] ahead of one per-tensor quantizer
    elo, ehi = (lo / s).min(), (hi / s).max()
    step = (ehi - elo) / qmax
    variants = {"per tensor": qg.path,
                "equalised": _with_input_quantizer(qg.path, qg.path.parent / "equalised.onnx", step * s,
                                                   np.full(4, np.round(-elo / step))),
                "per channel": _with_input_quantizer(qg.path, qg.path.parent / "per_channel.onnx", (hi - lo) / qmax,
                                                     np.round(-lo / ((hi - lo) / qmax)))}
    samples = held.samples["unet"]
    fs = open_session(fpath)
    ref = [run_session(fs, smp.inputs)[0] for smp in samples]
    last = max(smp.step for smp in samples)
    print(f"{args.model} UNet, w8a8 ({args.method} ranges elsewhere), {len(samples)} held-out samples; input channel "
          f"ranges {[round(float(v), 2) for v in lo]} .. {[round(float(v), 2) for v in hi]}")
    print(f"{'input quantizer':<16}{'SQNR dB':>9}{'last step dB':>14}")
    for name, path in variants.items():
        qs = open_session(path)
        out = [run_session(qs, smp.inputs)[0] for smp in samples]
        at_last = [i for i, smp in enumerate(samples) if smp.step == last]
        print(f"{name:<16}{mean_sqnr_db(ref, out):>9.2f}"
              f"{mean_sqnr_db([ref[i] for i in at_last], [out[i] for i in at_last]):>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
