"""Architecture presets: diffusers/transformers configs captured as JSON, built with random weights."""

from __future__ import annotations

import json
import sys
import warnings

from edgefusion.errors import EdgeFusionError
from edgefusion.resources import config_dir, shipped_names


def preset_names() -> list[str]:
    """Names of the shipped architecture presets (``configs/models/*.json``)."""
    return shipped_names("models", ".json")


def load_preset_config(name: str) -> dict:
    """The JSON config of one preset (UNet, text encoder, VAE, scheduler, tokenizer and sampler settings)."""
    path = config_dir("models") / f"{name}.json"
    if not path.is_file():
        raise EdgeFusionError(f"unknown model preset '{name}'",
                              f"use one of {', '.join(preset_names())} or a path to a diffusers model folder")
    return json.loads(path.read_text())


def build_preset_pipeline(name: str, seed: int = 0, quiet: bool = False):
    """Build a ``StableDiffusionPipeline`` with the preset's architecture and RANDOM weights (seeded)."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel

    from edgefusion.models.tokenizer import build_clip_tokenizer

    cfg = load_preset_config(name)
    if not quiet:
        msg = (f"WARNING: model preset '{name}' has RANDOM weights (architecture only). Quantization error and images "
               "of a random network do not predict those of a trained one; pass --model PATH for real weights.")
        warnings.warn(msg, stacklevel=2)
        print(msg, file=sys.stderr)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**cfg["unet"])
    vae = AutoencoderKL(**cfg["vae"])
    text_encoder = CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))
    tokenizer = build_clip_tokenizer(model_max_length=cfg["tokenizer"]["model_max_length"])
    sched_cfg = dict(cfg["scheduler"])
    scheduler = getattr(diffusers, sched_cfg.pop("_class_name")).from_config(sched_cfg)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    for module in (unet, vae, text_encoder):
        module.eval().requires_grad_(False)
    return pipe
