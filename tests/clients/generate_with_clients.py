"""Run in an environment with optimum-onnx / diffusers (not edgefusion's): load an export folder with
optimum's ORTStableDiffusionPipeline and diffusers' OnnxStableDiffusionPipeline, exactly as a user would, and save
each one's image as .npy (float HxWx3 in [0, 1]). Prints one JSON line with what happened.

    python generate_with_clients.py EXPORT_DIR OUT_DIR --prompt P --seed S --steps N --guidance G [--clients a,b]
"""

import argparse
import json
import sys
import traceback
from pathlib import Path

import numpy as np
import torch


def _latents(seed: int, shape) -> torch.Tensor:
    # the same starting noise as diffusers' StableDiffusionPipeline draws for generator=manual_seed(seed)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def run_optimum(folder, args):
    from optimum.onnxruntime import ORTStableDiffusionPipeline

    pipe = ORTStableDiffusionPipeline.from_pretrained(folder)
    out = pipe(args.prompt, num_inference_steps=args.steps, guidance_scale=args.guidance,
               generator=torch.Generator().manual_seed(args.seed), output_type="np")
    return np.asarray(out.images[0], np.float32), type(pipe.tokenizer).__name__


def run_diffusers(folder, args):
    from diffusers import DDIMScheduler, OnnxStableDiffusionPipeline

    # The deprecated pipeline computes `numpy latents * scheduler.init_noise_sigma`, which raises for the Euler
    # schedulers (a tensor there); a user runs it with a scheduler whose init_noise_sigma is a number, e.g. DDIM
    # from the folder's own settings. The calling test gives edgefusion's runtime the same scheduler.
    # (clip_sample off: the pipeline would switch it off itself, with a deprecation warning)
    cfg = json.loads((Path(folder) / "scheduler" / "scheduler_config.json").read_text())
    scheduler = DDIMScheduler.from_config(cfg, clip_sample=False)
    pipe = OnnxStableDiffusionPipeline.from_pretrained(folder, vae_encoder=None, scheduler=scheduler)
    shape = tuple(json.loads((Path(folder) / "manifest.json").read_text())["shapes"]["latent"])
    size = shape[2] * 8  # the pipeline assumes an 8x VAE: height/width only set the latent size it checks
    # the pipeline multiplies the starting noise by init_noise_sigma itself: hand it the same unit noise
    latents = _latents(args.seed, shape).numpy()
    out = pipe(args.prompt, height=size, width=size, num_inference_steps=args.steps, guidance_scale=args.guidance,
               latents=latents, output_type="np")
    return np.asarray(out.images[0], np.float32), type(pipe.tokenizer).__name__


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("out")
    p.add_argument("--prompt", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--clients", default="optimum,diffusers")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {}
    for name in args.clients.split(","):
        try:
            image, tok = {"optimum": run_optimum, "diffusers": run_diffusers}[name](args.folder, args)
            np.save(out / f"{name}.npy", image)
            report[name] = {"ok": True, "tokenizer": tok, "shape": list(image.shape)}
        except Exception as err:  # reported to the calling test, which fails with the message
            report[name] = {"ok": False, "error": f"{type(err).__name__}: {err}",
                            "trace": traceback.format_exc()[-2000:]}
    print("RESULT " + json.dumps(report))  # diffusers prints its own lines to stdout too
    return 0


if __name__ == "__main__":
    sys.exit(main())
