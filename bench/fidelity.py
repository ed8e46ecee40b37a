"""Fidelity of each calibration method, of the `recipe` policy's input rule, of `default` and of a skip split.

Captures the export's calibration set (the model's own sampler, prompts and steps) and a held-out set of other
prompts (seed + 10000, as the export's verification set), exports the float graphs once, then quantizes each
graph under each policy with each range method (the `recipe` policy also without its conv_in rule, and with a
skip split: the UNet's convolutions that read a skip concatenation split over its two halves, 16-bit partial sums,
the concatenation FP16; not in the export, README "Fidelity") and prints the SQNR against the float graph on the
held-out samples (pooled, and per denoising step for the UNet), with the factors the method chose.

    python bench/fidelity.py                       # embedded model, 8 + 8 prompts, every method
    python bench/fidelity.py --model tiny --calib-prompts 4 --heldout-prompts 2 --steps 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def capture(model: str, n_cal: int, n_held: int, steps: int | None, work: Path) -> dict:
    """Calibration and held-out sets plus float graphs of the three components, saved under ``work``."""
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
    steps = steps or s.num_inference_steps
    cal_p, held_p = split_prompts(read_prompts(src.prompts_file), n_cal, n_held)
    cal = capture_calibration(pipe, cal_p, steps, s.guidance_scale, s.height, s.width, progress=False)
    held = capture_calibration(pipe, held_p, steps, s.guidance_scale, s.height, s.width, seed=10_000, progress=False)
    cal.save(work / "cal")
    held.save(work / "held")
    for comp in ("text_encoder", "unet"):
        export_component(pipe, comp, cal.samples[comp][0].inputs, work / comp / "model.onnx")
    # the same UNet with the convolutions that read its skip concatenations split over the two halves
    export_component(pipe, "unet", cal.samples["unet"][0].inputs, work / "unet_split" / "model.onnx",
                     split_concat=True)
    return {"steps": steps, "cal": cal.count(), "held": held.count()}


def measure(work: Path, comp: str, policy, method: str, graph: str | None = None,
            weight_rounding: str = "gptq", fit_on: str = "cal") -> dict:
    """Quantize ``comp`` (the float graph in folder ``graph``, default ``comp``) under ``policy`` (a PolicySpec)
    with ``method`` and ``weight_rounding``; SQNR on the held-out samples. ``fit_on="held"``: ranges (and weight
    rounding) fit on the held-out samples themselves, the bound a range estimate could reach, not a method."""
    from edgefusion.calibration.capture import CalibrationSet
    from edgefusion.metrics import mean_sqnr_db
    from edgefusion.quant.quantize_graph import quantize_graph
    from edgefusion.runtime.session import open_session, run_session

    cal, held = CalibrationSet.load(work / "cal"), CalibrationSet.load(work / "held")
    fpath = work / (graph or comp) / "model.onnx"
    t = time.perf_counter()
    fit = {"cal": cal, "held": held}[fit_on]
    qg = quantize_graph(fpath, fpath.parent / "q.onnx", comp, policy, [s.inputs for s in fit.samples[comp]],
                        method=method, groups=[s.prompt_index for s in fit.samples[comp]],
                        weight_rounding=weight_rounding)
    wall = time.perf_counter() - t
    fs, qs = open_session(fpath), open_session(qg.path)
    samples = held.samples[comp]
    ref = [run_session(fs, s.inputs)[0] for s in samples]
    out = [run_session(qs, s.inputs)[0] for s in samples]
    steps = sorted({s.step for s in samples if s.step is not None})
    per_step = [mean_sqnr_db([r for r, s in zip(ref, samples) if s.step == k],
                             [o for o, s in zip(out, samples) if s.step == k]) for k in steps]
    return {"sqnr": mean_sqnr_db(ref, out), "per_step": per_step, "alpha": qg.range_rule.get("alpha", {}),
            "wall_s": wall}


def add_capture_arguments(ap: argparse.ArgumentParser) -> None:
    """The flags of :func:`capture` (model, prompt counts, steps, work folder), shared by the benches that use it."""
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--calib-prompts", type=int, default=8)
    ap.add_argument("--heldout-prompts", type=int, default=8)
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's sampler)")
    ap.add_argument("--work", default=None, help="keep the captured sets here (default: a temporary folder)")


def captured_w8a8_unet(args, folder: str):
    """For the W8A8 input-latent benches: capture into ``args.work`` (or a temporary folder), then quantize the UNet
    under ``w8a8`` with ``args.method`` into ``work/folder``. Returns ``(tmp, cal, held, float path, QuantizedGraph)``;
    keep ``tmp`` (a TemporaryDirectory or None) alive while the files are used."""
    from edgefusion.calibration.capture import CalibrationSet
    from edgefusion.quant.policy import load_policy
    from edgefusion.quant.quantize_graph import quantize_graph

    tmp = None if args.work else tempfile.TemporaryDirectory()
    work = Path(args.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    capture(args.model, args.calib_prompts, args.heldout_prompts, args.steps, work)
    cal, held = CalibrationSet.load(work / "cal"), CalibrationSet.load(work / "held")
    fpath = work / "unet" / "model.onnx"
    qg = quantize_graph(fpath, work / folder / "q.onnx", "unet", load_policy("w8a8"),
                        [s.inputs for s in cal.samples["unet"]], method=args.method,
                        groups=[s.prompt_index for s in cal.samples["unet"]])
    return tmp, cal, held, fpath, qg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_capture_arguments(ap)
    ap.add_argument("--methods", default="minmax,mse,crossval")
    ap.add_argument("--weight-rounding", default="gptq", help="gptq (the export's default) or nearest")
    args = ap.parse_args(argv)

    from edgefusion.quant.policy import load_policy
    from edgefusion.quant.precision import Precision

    tmp = None if args.work else tempfile.TemporaryDirectory()
    work = Path(args.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    info = capture(args.model, args.calib_prompts, args.heldout_prompts, args.steps, work)
    print(f"{args.model}: calibration {info['cal']['unet']} UNet / {info['cal']['text_encoder']} text-encoder "
          f"samples ({args.calib_prompts} prompts x {info['steps']} steps), held out {info['held']['unet']} / "
          f"{info['held']['text_encoder']} ({args.heldout_prompts} other prompts)\n")
    methods = args.methods.split(",")
    recipe = load_policy("recipe")  # `default` without its outermost-level rules
    no_rule = load_policy("recipe")
    no_rule.rules = [(k, p) for k, p in no_rule.rules if k != "re:^unet/conv_in/"]
    no_rule.name = "recipe without the conv_in rule"
    split = load_policy("recipe")
    at = next(i for i, (k, _) in enumerate(split.rules) if not k.startswith("re:^unet/"))  # after the UNet rules
    split.rules.insert(at, ("op:Concat", Precision.FP16))  # the halves are not requantized for the norm
    split.name = "recipe + skip split"
    cases = ([("unet", load_policy(p), None) for p in ("w8a8", "w8a16")]
             + [("unet", no_rule, None), ("unet", recipe, None), ("unet", load_policy("default"), None),
                ("unet", split, "unet_split")])
    te = [("text_encoder", load_policy(p), None) for p in ("w8a8", "w8a16")]
    head = f"{'graph':<13}{'policy':<34}{'method':<10}{'SQNR dB':>8}  {'first/mid/last step dB':<24}{'factors':<18}"
    print(head)
    print("-" * len(head))
    for comp, spec, graph in cases + te:
        for method in methods:
            r = measure(work, comp, spec, method, graph, args.weight_rounding)
            ps = r["per_step"]
            steps = f"{ps[0]:.1f} / {ps[len(ps) // 2]:.1f} / {ps[-1]:.1f}" if len(ps) > 1 else "-"
            alpha = " ".join(f"{k}b x{v:g}" for k, v in r["alpha"].items()) or "-"
            print(f"{comp:<13}{spec.name:<34}{method:<10}{r['sqnr']:>8.2f}  {steps:<24}{alpha:<18}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
