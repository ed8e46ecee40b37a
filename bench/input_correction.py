"""Would a float correction of the input latent's quantization error help the W8A8 UNet? On held-out samples.

At W8A8 the 8-bit input latent carries a share of the UNet's output noise (most of it with the prompt split before
its fix of 2026-11-30, whose held-out latents left the calibration range; README "Fidelity"). Its rounding error
``d = x - DQ(Q(x))`` is known wherever the float input is (the host), so a graph could add ``a(t) * d`` to the noise
prediction: a first-order correction through the UNet's response to its input (about the identity at high noise,
larger at low noise). This quantizes the UNet under ``w8a8`` (the export's way), fits one factor ``a`` per denoising
step by least squares of ``float - quantized`` on ``d`` over the *calibration* samples, and prints the SQNR against
the float graph on the *held-out* samples without and with the correction (pooled, and first / middle / last step).
Measured, not adopted (README "Tried and not adopted").

    python bench/input_correction.py                            # embedded model, 8 + 8 prompts, 20 steps
    python bench/input_correction.py --calib-prompts 4 --heldout-prompts 2 --steps 8   # the peer bench's setting
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _input_quantizer(qdq: Path):
    """The ``sample`` input's fake quantization in the QDQ graph, as a numpy function."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(qdq), load_external_data=False)
    node = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "sample")
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    scale, zp = np.float64(inits[node.input[1]]), inits[node.input[2]]
    info, z = np.iinfo(zp.dtype), np.float64(zp)
    return lambda x: ((np.clip(np.rint(x / scale) + z, info.min, info.max) - z) * scale).astype(np.float32)


def main(argv=None) -> int:
    from fidelity import add_capture_arguments, captured_w8a8_unet

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_capture_arguments(ap)
    ap.add_argument("--method", default="crossval", help="range method (default: the export's)")
    args = ap.parse_args(argv)

    from edgefusion.metrics import mean_sqnr_db
    from edgefusion.runtime.session import open_session, run_session

    tmp, cal, held, fpath, qg = captured_w8a8_unet(args, "ic")
    fq = _input_quantizer(qg.path)
    fs, qs = open_session(fpath), open_session(qg.path)

    def run(samples):
        return [(s.step, run_session(fs, s.inputs)[0], run_session(qs, s.inputs)[0],
                 s.inputs["sample"] - fq(s.inputs["sample"])) for s in samples]

    fit, test = run(cal.samples["unet"]), run(held.samples["unet"])
    steps = sorted({r[0] for r in fit})
    a = {}
    for k in steps:
        e = np.concatenate([(r[1] - r[2]).ravel() for r in fit if r[0] == k])
        d = np.concatenate([r[3].ravel() for r in fit if r[0] == k]).astype(np.float64)
        a[k] = float(e @ d / (d @ d))
    ref, before = [r[1] for r in test], [r[2] for r in test]
    after = [r[2] + a[r[0]] * r[3] for r in test]
    print(f"{args.model} UNet, w8a8 ({args.method} ranges), {len(fit)} calibration / {len(test)} held-out samples")
    print(f"{'':<22}{'pooled dB':>10}  {'first / mid / last step dB':<28}")
    for name, out in (("as exported", before), ("+ a(t) x input error", after)):
        per = [mean_sqnr_db([ref[i] for i, r in enumerate(test) if r[0] == k],
                            [out[i] for i, r in enumerate(test) if r[0] == k]) for k in steps]
        print(f"{name:<22}{mean_sqnr_db(ref, out):>10.2f}  {per[0]:.1f} / {per[len(per) // 2]:.1f} / {per[-1]:.1f}")
    print("a(t) per step: " + " ".join(f"{a[k]:.2f}" for k in steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
