"""Where the W8A8 text encoder's error comes from: each op type lifted to 16-bit activations, side by side.

Quantizes the text encoder under ``w8a8`` (the export's way, ``minmax`` ranges: the range methods do not move it,
README "Fidelity"), then again with one op type (or the final layer norm) at W8A16 before the ``w8a8`` rules, and
prints the SQNR against the float graph on held-out prompts; last, ``w8a8`` with ranges fit on the held-out prompts
themselves (``minmax`` and ``mse``): the most any range estimate could reach there. A tensor takes the widest width
its producer and consumers ask for, so lifting the residual adds also lifts the layer norms' inputs (the residual
stream), and lifting the layer norms lifts their inputs too; what an op type gains is the share of the noise its
tensors carry.

    python bench/text_encoder_widths.py                  # embedded model, 8 + 8 prompts
    python bench/text_encoder_widths.py --model tiny --calib-prompts 4 --heldout-prompts 2 --steps 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OP_TYPES = ("Add", "LayerNorm", "MatMul", "Gemm", "Softmax", "GELU", "SiLU", "Mul", "Gather", "Concat")  # if present


def main(argv=None) -> int:
    from fidelity import add_capture_arguments, capture, measure

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_capture_arguments(ap)
    args = ap.parse_args(argv)

    from edgefusion.quant.policy import load_policy
    from edgefusion.quant.precision import Precision

    tmp = None if args.work else tempfile.TemporaryDirectory()
    work = Path(args.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "cal").is_dir():
        capture(args.model, args.calib_prompts, args.heldout_prompts, args.steps, work)

    def lifted(name: str, rule: str | None):
        spec = load_policy("w8a8")
        if rule:
            spec.rules = [(rule, Precision.W8A16)] + spec.rules
        spec.name = name
        return spec

    import onnx

    from edgefusion.quant.layers import find_layers

    graph = onnx.load(str(work / "text_encoder" / "model.onnx"), load_external_data=False)
    present = {la.op_type for la in find_layers(graph, "text_encoder") if not la.passthrough}
    cases = [("w8a8", None)] + [(f"{op} W8A16", f"op:{op}") for op in OP_TYPES if op in present]
    cases.append(("final layer norm W8A16", "re:final_layer_norm"))
    cases.append(("w8a16", None))
    print(f"{args.model} text encoder, held-out prompts: SQNR vs the float graph")
    base = None
    for name, rule in cases:
        spec = load_policy("w8a16") if name == "w8a16" else lifted(name, rule)
        sqnr = measure(work, "text_encoder", spec, "minmax")["sqnr"]
        base = sqnr if base is None else base
        print(f"  {name:<26}{sqnr:7.2f} dB  ({sqnr - base:+.2f})", flush=True)
    print("the bound: w8a8 with ranges fit on the held-out prompts themselves (not a method)")
    for method in ("minmax", "mse"):
        sqnr = measure(work, "text_encoder", load_policy("w8a8"), method, fit_on="held")["sqnr"]
        print(f"  {'w8a8, oracle ' + method:<26}{sqnr:7.2f} dB  ({sqnr - base:+.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
