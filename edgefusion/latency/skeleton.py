"""Weight-free ONNX graphs of a model's components, built on PyTorch's meta device from configs alone.

The latency model needs structure, shapes and weight sizes, never weight values. Building the modules on the
``meta`` device and exporting with the same dynamo exporter as ``edgefusion export`` gives the real-size graph
(sd-v1.5's UNet at 512x512: ~16 s, ~0.6 GB) without allocating or writing a single weight. Initializers are kept as
tensors whose data points at a file that does not exist, so shape inference, layer discovery and the quantization
plan all work unchanged while any attempt to read a value fails loudly.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import onnx

from edgefusion.errors import EdgeFusionError
from edgefusion.models.torch_to_onnx import IO_NAMES, OPSET, component_module
from edgefusion.models.source import ModelSource

NO_DATA = "edgefusion-skeleton-has-no-weights"  # external-data location of every skeleton initializer


def _configs(source: ModelSource) -> dict:
    if source.kind == "preset":
        from edgefusion.models.presets import load_preset_config

        cfg = load_preset_config(source.ref)
        return {"unet": cfg["unet"], "vae": cfg["vae"], "text_encoder": cfg["text_encoder"],
                "max_length": cfg["tokenizer"]["model_max_length"]}
    root = Path(source.ref)
    try:
        te = json.loads((root / "text_encoder" / "config.json").read_text())
        tok = json.loads((root / "tokenizer" / "tokenizer_config.json").read_text())
        return {"unet": json.loads((root / "unet" / "config.json").read_text()),
                "vae": json.loads((root / "vae" / "config.json").read_text()),
                "text_encoder": te, "max_length": int(tok.get("model_max_length", 77))}
    except (OSError, ValueError) as err:
        raise EdgeFusionError(f"cannot read the configs of '{root}' ({type(err).__name__}: {err})",
                              "check unet/, vae/, text_encoder/ and tokenizer/ configs") from None


def _meta_pipe(cfg: dict):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    clean = {k: v for k, v in cfg["text_encoder"].items() if not k.startswith("_")}
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(cfg["unet"])
        vae = AutoencoderKL.from_config(cfg["vae"])
        te = CLIPTextModel(CLIPTextConfig(**clean))
    for m in (unet, vae, te):
        m.eval().requires_grad_(False)
    return SimpleNamespace(unet=unet, vae=vae, text_encoder=te)


def example_shapes(cfg: dict, height: int, width: int) -> dict[str, dict[str, tuple[list[int], str]]]:
    """Input shapes/dtypes of each component at an image size (batch 1, one CFG branch per call)."""
    scale = 2 ** (len(cfg["vae"].get("block_out_channels", [0] * 4)) - 1)
    if height % scale or width % scale:
        raise EdgeFusionError(f"image size {height}x{width} is not a multiple of the VAE's factor {scale}",
                              f"pass --height/--width that are multiples of {scale}")
    lat = [1, int(cfg["unet"].get("in_channels", 4)), height // scale, width // scale]
    cross = int(cfg["unet"].get("cross_attention_dim", 768))
    return {"text_encoder": {"input_ids": ([1, cfg["max_length"]], "int64")},
            "unet": {"sample": (lat, "float32"), "timestep": ([1], "float32"),
                     "encoder_hidden_states": ([1, cfg["max_length"], cross], "float32")},
            "vae_decoder": {"latent_sample": ([1, int(cfg["vae"].get("latent_channels", 4)), *lat[2:]], "float32")}}


def build_skeletons(source: ModelSource, height: int | None = None, width: int | None = None,
                    components: tuple[str, ...] = ("text_encoder", "unet", "vae_decoder")
                    ) -> dict[str, onnx.ModelProto]:
    """Weight-free ONNX graphs (same exporter and opset as a real export) of the requested components."""
    import torch

    cfg = _configs(source)
    height = height or source.sampler.height
    width = width or source.sampler.width
    shapes = example_shapes(cfg, height, width)
    pipe = _meta_pipe(cfg)
    out = {}
    for comp in components:
        module = component_module(pipe, comp)
        in_names, out_names = IO_NAMES[comp]
        args = tuple(torch.zeros(shapes[comp][n][0], dtype=getattr(torch, shapes[comp][n][1]), device="meta")
                     for n in in_names)
        log = io.StringIO()
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                warnings.simplefilter("ignore")
                logging.getLogger("torch.onnx").setLevel(logging.ERROR)
                program = torch.onnx.export(module, args, dynamo=True, opset_version=OPSET, input_names=in_names,
                                            output_names=out_names, optimize=False, export_params=False)
        except Exception as err:  # the exporter raises many types; keep the first line
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise EdgeFusionError(f"could not trace the {comp} architecture on the meta device: {first}",
                                  "estimate from an export folder instead (edgefusion latency EXPORT_DIR)") from None
        out[comp] = _to_proto(program.model)
    return out


def _to_proto(model) -> onnx.ModelProto:
    """Serialize an onnx_ir model whose initializers have no values (meta tensors) into a skeleton proto."""
    import onnx_ir as ir

    graph = model.graph
    weights = []
    for name, value in list(graph.initializers.items()):
        weights.append((name, value.dtype, [int(d) for d in value.shape]))
        value.const_value = None
        graph.initializers.pop(name)
    proto = ir.serde.serialize_model(model)
    for name, dtype, dims in weights:
        t = onnx.TensorProto(name=name, data_type=int(dtype.value), dims=dims)
        t.data_location = onnx.TensorProto.EXTERNAL
        t.external_data.add(key="location", value=NO_DATA)
        proto.graph.initializer.append(t)
    return proto
