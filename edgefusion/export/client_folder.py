"""The files that make an export folder loadable by optimum's ``ORTStableDiffusionPipeline`` and diffusers'
``OnnxStableDiffusionPipeline`` without edits: per-component ``config.json``, tokenizer files that both the fast and
the slow ``CLIPTokenizer`` read, and a ``model_index.json`` both loaders accept."""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_SOURCES = {"text_encoder": "text_encoder", "unet": "unet", "vae_decoder": "vae"}  # folder -> pipeline attr
CLIENT_PIPELINE = "OnnxStableDiffusionPipeline"  # diffusers' class; optimum's explicit class ignores the name
ONNX_ENTRY = ["diffusers", "OnnxRuntimeModel"]


def write_component_configs(pipe, stage: Path) -> list[str]:
    """``<component>/config.json`` from the PyTorch modules' configs (optimum's ORT models require one each;
    its pipeline reads e.g. ``unet.config.in_channels`` and ``vae.config.scaling_factor``). Returns the files."""
    written = []
    for folder, attr in CONFIG_SOURCES.items():
        module = getattr(pipe, attr)
        cfg = module.config.to_dict() if hasattr(module.config, "to_dict") else dict(module.config)
        cfg = {k: v for k, v in cfg.items() if not k.startswith("_") or k in ("_class_name", "_diffusers_version")}
        if not hasattr(module.config, "to_dict"):  # a diffusers model: its class, as diffusers' own files name it
            cfg = {"_class_name": type(module).__name__, "_diffusers_version": _diffusers_version(), **cfg}
        path = stage / folder / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cfg, indent=1, sort_keys=True, default=_jsonable) + "\n")
        written.append(f"{folder}/config.json")
    return written


def _jsonable(value):
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def write_slow_tokenizer_files(tokenizer, folder: Path) -> list[str]:
    """``vocab.json`` and ``merges.txt`` beside ``tokenizer.json``: the slow (python) ``CLIPTokenizer`` of
    transformers 4.x reads only these, the fast one only ``tokenizer.json``; both come from the same BPE model."""
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if model.get("type") != "BPE":
        from edgefusion.errors import EdgeFusionError

        raise EdgeFusionError(f"the tokenizer's model is {model.get('type')}, not BPE", "use a CLIP BPE tokenizer")
    vocab = dict(sorted(model["vocab"].items(), key=lambda kv: kv[1]))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")
    return ["tokenizer/vocab.json", "tokenizer/merges.txt"]


def model_index(scheduler_class: str) -> dict:
    """The ``model_index.json`` content: diffusers loads every ``["diffusers", "OnnxRuntimeModel"]`` entry from
    ``<component>/model.onnx``, optimum opens the same files by folder name; absent parts are ``[null, null]``."""
    return {"_class_name": CLIENT_PIPELINE, "_diffusers_version": _diffusers_version(), "_edgefusion": True,
            "text_encoder": ONNX_ENTRY, "unet": ONNX_ENTRY, "vae_decoder": ONNX_ENTRY,
            "vae_encoder": [None, None], "safety_checker": [None, None], "feature_extractor": [None, None],
            "requires_safety_checker": False,
            "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", scheduler_class]}


def _diffusers_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("diffusers")
    except PackageNotFoundError:
        return "0.0.0"


def write_model_index(stage: Path) -> None:
    """Write :func:`model_index` for the scheduler saved in ``stage/scheduler``."""
    sched = json.loads((stage / "scheduler" / "scheduler_config.json").read_text())["_class_name"]
    (stage / "model_index.json").write_text(json.dumps(model_index(sched), indent=1) + "\n")
