"""Resolve ``--model``: a preset name, or a local diffusers Stable Diffusion folder loaded with from_pretrained."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgefusion.errors import EdgeFusionError
from edgefusion.models.presets import load_preset_config, preset_names

DEFAULT_MODEL = "embedded"
EMBEDDED = "embedded"
SUPPORTED_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")  # same five components
# UNet features the exporter does not trace, quantize or feed: config key -> what it is
UNSUPPORTED_UNET = {
    "class_embed_type": "class embeddings",
    "num_class_embeds": "class embeddings",
    "addition_embed_type": "added conditioning embeddings (SDXL-style text_time / image embeddings)",
    "encoder_hid_dim_type": "an encoder hidden-state projection (encoder_hid_proj)",
    "encoder_hid_dim": "an encoder hidden-state projection (encoder_hid_proj)",
    "time_cond_proj_dim": "a time-conditioning projection (time_cond_proj_dim, LCM-style guidance embedding)",
}


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
        """Plain-dict form for JSON. The shipped model is written as ``embedded`` (and its prompt file as
        ``embedded/edgefusion_prompts.txt``), not as the installation's site-packages path."""
        d = asdict(self)
        home = embedded_model_dir().resolve()
        if self.kind == "local" and Path(self.ref) == home:
            d["ref"] = EMBEDDED
            if self.prompts_file and Path(self.prompts_file).parent == home:
                d["prompts_file"] = f"{EMBEDDED}/{Path(self.prompts_file).name}"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSource":
        """Inverse of :meth:`to_dict`."""
        ref, prompts = d["ref"], d.get("prompts_file")
        if d["kind"] == "local" and ref == EMBEDDED:
            home = embedded_model_dir().resolve()
            ref = str(home)
            if prompts and prompts.startswith(f"{EMBEDDED}/"):
                prompts = str(home / prompts[len(EMBEDDED) + 1:])
        return cls(kind=d["kind"], ref=ref, random_weights=d["random_weights"],
                   sampler=SamplerDefaults(**d["sampler"]), prompts_file=prompts)


def _read_json(path: Path, src: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise EdgeFusionError(f"'{src}' has an unreadable {path.parent.name}/{path.name} ({type(err).__name__}: "
                              f"{err})", "check the file (it should be the JSON written by save_pretrained)") from None
    if not isinstance(data, dict):
        raise EdgeFusionError(f"'{src}' has a {path.parent.name}/{path.name} that is not a JSON object",
                              "check the file (it should be the JSON written by save_pretrained)")
    return data


def check_architecture(src: str, unet_config: dict, pipeline_class: str | None = None) -> None:
    """Refuse, before any work and in one line, what the exporter cannot handle: a pipeline other than Stable
    Diffusion, a UNet other than ``UNet2DConditionModel``, or one conditioned on more than text and timestep."""
    if pipeline_class is not None and pipeline_class not in SUPPORTED_PIPELINES:
        raise EdgeFusionError(f"'{src}' is a {pipeline_class} (model_index.json), which edgefusion cannot export: "
                              "it handles Stable Diffusion 1.x/2.x pipelines (StableDiffusionPipeline)",
                              "pass a Stable Diffusion 1.x/2.x model folder")
    unet_class = unet_config.get("_class_name", "UNet2DConditionModel")
    if unet_class != "UNet2DConditionModel":
        raise EdgeFusionError(f"'{src}' has a {unet_class} UNet, which edgefusion cannot export: it handles "
                              "UNet2DConditionModel", "pass a Stable Diffusion 1.x/2.x model folder")
    found: dict[str, list[str]] = {}
    for key, what in UNSUPPORTED_UNET.items():
        if unet_config.get(key) is not None:
            found.setdefault(what, []).append(f"{key}={unet_config[key]!r}")
    if found:
        named = "; ".join(f"{what} ({', '.join(keys)})" for what, keys in found.items())
        raise EdgeFusionError(f"the UNet of '{src}' uses {named} in unet/config.json, which edgefusion cannot export "
                              "(it handles UNets conditioned on the text and the timestep only, as in Stable "
                              "Diffusion 1.x/2.x)", "pass a Stable Diffusion 1.x/2.x model folder")


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
        check_architecture(src, cfg["unet"])
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
    index = _read_json(path / "model_index.json", src)
    check_architecture(src, _read_json(path / "unet" / "config.json", src), str(index.get("_class_name") or "pipeline without a _class_name"))
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


def quiet_progress_bars() -> None:
    """No loading bars from diffusers or transformers in this process (``--no-progress``)."""
    from diffusers.utils import logging as df_logging
    from transformers.utils import logging as hf_logging

    df_logging.disable_progress_bar()
    hf_logging.disable_progress_bar()


def load_pipeline(source: ModelSource, allow_pickle: bool = False, quiet: bool = False, progress: bool = True):
    """Load the float PyTorch ``StableDiffusionPipeline`` of a resolved source (CPU, fp32, eval mode).
    ``progress=False``: without the libraries' loading bars."""
    if not progress:
        quiet_progress_bars()
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
