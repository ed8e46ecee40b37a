"""Prompt-attribute accuracy of a text-to-image model of the shapes dataset (the offline stand-in for CLIP score)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from edgefusion.embedded.analyzer import analyse, score
from edgefusion.embedded.shapes import held_out_prompts


def attribute_accuracy(generate: Callable[[str, int], np.ndarray], n_prompts: int = 100, seed: int = 0,
                       progress: bool = False) -> dict:
    """Generate one image per held-out prompt with ``generate(prompt, seed)`` and score what the analyser reads."""
    from tqdm.auto import tqdm

    asked = held_out_prompts(n_prompts, seed)
    readings = [analyse(generate(a.caption(), seed + i))
                for i, a in enumerate(tqdm(asked, desc="attribute accuracy", disable=not progress))]
    return {"prompts": n_prompts, "seed": seed, "accuracy": score(readings, asked)}


def torch_generator(model_path: str, steps: int | None = None, guidance_scale: float | None = None):
    """``generate(prompt, seed)`` over a diffusers folder, with the sampler settings it ships with by default."""
    import torch

    from edgefusion.models.source import load_pipeline, resolve_model_source

    src = resolve_model_source(model_path)
    pipe = load_pipeline(src, quiet=True)
    steps = steps or src.sampler.num_inference_steps
    gs = src.sampler.guidance_scale if guidance_scale is None else guidance_scale

    def generate(prompt: str, seed: int) -> np.ndarray:
        with torch.no_grad():
            return pipe(prompt, num_inference_steps=steps, guidance_scale=gs, height=src.sampler.height,
                        width=src.sampler.width, generator=torch.Generator().manual_seed(seed),
                        output_type="np").images[0]

    return generate, {"model": src.ref, "steps": steps, "guidance_scale": gs}
