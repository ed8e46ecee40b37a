"""Prompt-attribute accuracy of the embedded (shapes) model on held-out prompts.

    python eval/attribute_accuracy.py [--model PATH|embedded] [--prompts 100] [--seed 0] [--steps N] [--json]
"""

from __future__ import annotations

import argparse
import json


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded", help="diffusers folder of a shapes model (default: embedded)")
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    ap.add_argument("--guidance-scale", type=float, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from edgefusion.embedded.quality import attribute_accuracy, torch_generator

    generate, info = torch_generator(args.model, args.steps, args.guidance_scale)
    result = {**info, **attribute_accuracy(generate, args.prompts, args.seed, progress=not args.json)}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        acc = result["accuracy"]
        print(f"{info['model']} ({info['steps']} steps, guidance {info['guidance_scale']}), "
              f"{args.prompts} held-out prompts:")
        for k in ("colour", "shape", "size", "position", "background", "all"):
            print(f"  {k:<11}{acc[k] * 100:6.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
