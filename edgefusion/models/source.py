"""Resolve ``--model``: a preset name, or a local diffusers Stable Diffusion folder loaded with from_pretrained."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgefusion.errors import EdgeFusionError
from edgefusion.models.presets import load_preset_config, preset_names

DEFAULT_MODEL = "embedded"
EMBEDDED = "embedded"


def embedded_model_dir() -> Path:
    """Folder of the shipped, project-trained shapes model (package data)."""
    from importlib import resources

    return Path(str(resources.files("edgefusion.embedded").joinpath("model")))


@dataclass
class SamplerDefaults:
    """How the model is meant to be sampled (the exported pipeline reuses these)."""

    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    height: int = 512
    width: int = 512


@dataclass
class ModelSource:
    """Where a model comes from; JSON round-trippable for the manifest."""

    kind: str  # "preset" | "local"
    ref: str  # preset name or absolute path
    random_weights: bool
    sampler: SamplerDefaults = field(default_factory=SamplerDefaults)
    prompts_file: str | None = None  # the model's own calibration prompts (edgefusion_prompts.txt), if it ships any

    def to_dict(self) -> dict:
        """Plain-dict form for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSource":
        """Inverse of :meth:`to_dict`."""
        return cls(kind=d["kind"], ref=d["ref"], random_weights=d["random_weights"],
                   sampler=SamplerDefaults(**d["sampler"]), prompts_file=d.get("prompts_file"))


def resolve_model_source(src: str | None) -> ModelSource:
    """Check ``src`` without loading weights and say what it is; raises a one-line error when it is unusable."""
    src = src or DEFAULT_MODEL
    if src == EMBEDDED:
        path = embedded_model_dir()
        if not (path / "model_index.json").is_file():
            raise EdgeFusionError("the embedded model is missing from this installation",
                                  "reinstall edgefusion, or train it: python -m edgefusion.embedded.train --out DIR")
        return resolve_model_source(str(path))
    path = Path(src).expanduser()
    if src in preset_names() and not path.exists():
        cfg = load_preset_config(src)
        return ModelSource("preset", src, True, SamplerDefaults(**cfg["sampler"]))
    if not path.exists():
        raise EdgeFusionError(f"model '{src}' is neither a preset nor an existing path",
                              f"pass a diffusers model folder, 'embedded', or one of: {', '.join(preset_names())}")
    if not path.is_dir():
        raise EdgeFusionError(f"model path '{src}' is a file, not a diffusers model folder",
                              "pass the folder that holds model_index.json")
    if not (path / "model_index.json").is_file():
        raise EdgeFusionError(f"'{src}' has no model_index.json, so it is not a diffusers pipeline folder",
                              "pass the folder written by StableDiffusionPipeline.save_pretrained")
    for sub in ("unet", "text_encoder", "vae", "tokenizer", "scheduler"):
        if not (path / sub).is_dir():
            raise EdgeFusionError(f"'{src}' has no {sub}/ folder",
                                  "a Stable Diffusion folder needs unet/, text_encoder/, vae/, tokenizer/, "
                                  "scheduler/")
    extra = path / "edgefusion_sampler.json"  # optional: how a shipped model expects to be sampled
    try:
        if extra.is_file():
            sampler = SamplerDefaults(**json.loads(extra.read_text()))
        else:
            unet_cfg = json.loads((path / "unet" / "config.json").read_text())
            vae_cfg = json.loads((path / "vae" / "config.json").read_text())
            scale = 2 ** (len(vae_cfg.get("block_out_channels", [0] * 4)) - 1)
            size = int(unet_cfg.get("sample_size", 64)) * scale
            sampler = SamplerDefaults(height=size, width=size)
    except (OSError, ValueError, TypeError) as err:
        raise EdgeFusionError(f"'{src}' has an unreadable config ({type(err).__name__}: {err})",
                              "check unet/config.json, vae/config.json and edgefusion_sampler.json") from None
    prompts = path / "edgefusion_prompts.txt"
    return ModelSource("local", str(path.resolve()), False, sampler,
                       str(prompts.resolve()) if prompts.is_file() else None)


def check_weights_format(path: Path, allow_pickle: bool) -> None:
    """Refuse pickle-only weights unless the user allowed them (pickle files can run code when loaded)."""
    if not any(path.glob("unet/*.safetensors")) and not allow_pickle:
        raise EdgeFusionError(f"'{path}' has no safetensors weights in unet/ (pickle .bin files can run code)",
                              "convert them to safetensors, or pass --allow-pickle if you trust the files")


def load_pipeline(source: ModelSource, allow_pickle: bool = False, quiet: bool = False):
    """Load the float PyTorch ``StableDiffusionPipeline`` of a resolved source (CPU, fp32, eval mode)."""
    if source.kind == "preset":
        from edgefusion.models.presets import build_preset_pipeline

        return build_preset_pipeline(source.ref, quiet=quiet)
    from diffusers import StableDiffusionPipeline

    path = Path(source.ref)
    check_weights_format(path, allow_pickle)
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            str(path), use_safetensors=None if allow_pickle else True, safety_checker=None,
            requires_safety_checker=False, local_files_only=True)
    except Exception as err:  # any loader failure is the folder's problem, reported in one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EdgeFusionError(f"could not load '{path}' as a Stable Diffusion pipeline ({first})",
                              "check that the folder was written by save_pretrained and is complete") from None
    pipe.set_progress_bar_config(disable=True)
    for name in ("unet", "vae", "text_encoder"):
        getattr(pipe, name).eval().requires_grad_(False)
    return pipe
