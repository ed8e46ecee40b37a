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
    p.add_argument("--out", default="edgefusion.png", help="output PNG path")
    p.set_defaults(run=run)


def run(args) -> int:
    """Execute ``edgefusion generate``."""
    from edgefusion.runtime.pipeline import OnnxStableDiffusion, save_png

    pipe = OnnxStableDiffusion(args.export_dir)
    image = pipe(args.prompt, seed=args.seed, steps=args.steps, guidance_scale=args.guidance_scale)
    print(save_png(image, args.out))
    return 0
