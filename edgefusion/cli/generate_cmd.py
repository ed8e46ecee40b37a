"""``edgefusion generate``: text -> PNG from an export folder, on CPU with onnxruntime."""

from __future__ import annotations


def add_parser(sub) -> None:
    """Register the sub-command."""
    p = sub.add_parser("generate", help="generate an image from an export folder (CPU simulation)")
    p.add_argument("export_dir", help="folder written by `edgefusion export`")
    p.add_argument("--prompt", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--guidance-scale", type=float, default=None)
    p.add_argument("--out", default="edgefusion.png", help="output PNG path (an existing file is replaced)")
    p.set_defaults(run=run)


def run(args) -> int:
    """Execute ``edgefusion generate``: every input is checked before the models are loaded."""
    from pathlib import Path

    from edgefusion import diagnostics
    from edgefusion.calibration.prompts import check_prompt_text
    from edgefusion.errors import EdgeFusionError
    from edgefusion.paths import check_writable_file
    from edgefusion.runtime.pipeline import read_export_manifest

    read_export_manifest(args.export_dir)
    check_prompt_text(args.prompt, "--prompt")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise EdgeFusionError(f"folder '{out.parent}' does not exist", "create it or pass another --out")
    check_writable_file(out)
    if args.steps is not None and args.steps < 1:
        raise EdgeFusionError(f"--steps must be at least 1, got {args.steps}", "pass --steps 1 or more")

    from edgefusion.models.tokenizer import prompt_fit_warning
    from edgefusion.runtime.pipeline import OnnxStableDiffusion, save_png

    pipe = OnnxStableDiffusion(args.export_dir)
    # a preset's tokenizer is a character-level stand-in for random weights: every word is "split" there
    note = None if pipe.manifest["source"].get("random_weights") else prompt_fit_warning(pipe.tokenizer, args.prompt)
    if note:
        diagnostics.warn(note, "rephrase it with the model's own words, or shorten it")
    image = pipe(args.prompt, seed=args.seed, steps=args.steps, guidance_scale=args.guidance_scale)
    print(save_png(image, args.out))
    return 0
