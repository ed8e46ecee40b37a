"""Export the three Stable Diffusion components to float ONNX graphs with torch's dynamo exporter."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np

from edgefusion.errors import EdgeFusionError
from edgefusion.graph.split_concat_convs import split_concat_convs_file
from edgefusion.graph.unshare_biases import unshare_biases_file

OPSET = 21  # 16-bit QuantizeLinear/DequantizeLinear and GroupNormalization need opset 21

# component -> (input names, output names); names follow optimum's ONNX Stable Diffusion export
IO_NAMES = {
    "text_encoder": (["input_ids"], ["last_hidden_state"]),
    "unet": (["sample", "timestep", "encoder_hidden_states"], ["out_sample"]),
    "vae_decoder": (["latent_sample"], ["sample"]),
}


def quiet_hf_logging() -> None:
    """Silence transformers' and diffusers' info/warning logs (the stages print their own one-line notes)."""
    from diffusers.utils import logging as df_logging
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    df_logging.set_verbosity_error()


def component_module(pipe, component: str):
    """A ``torch.nn.Module`` whose positional inputs and single output match :data:`IO_NAMES`."""
    import torch

    class TextEncoder(torch.nn.Module):
        def __init__(self, te):
            super().__init__()
            self.te = te

        def forward(self, input_ids):
            return self.te(input_ids, return_dict=False)[0]

    class UNet(torch.nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states):
            return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]

    class VaeDecoder(torch.nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, latent_sample):
            return self.vae.decode(latent_sample, return_dict=False)[0]

    wrap = {"text_encoder": (TextEncoder, "text_encoder"), "unet": (UNet, "unet"), "vae_decoder": (VaeDecoder, "vae")}
    cls, attr = wrap[component]
    return cls(getattr(pipe, attr)).eval()


def run_torch(module, component: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Run a component wrapper on numpy inputs (named as in :data:`IO_NAMES`) and return its output."""
    import torch

    names = IO_NAMES[component][0]
    with torch.no_grad():
        out = module(*[torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in names])
    return out.float().numpy()


def export_component(pipe, component: str, example: dict[str, np.ndarray], path: Path,
                     split_concat: bool = False) -> Path:
    """Export one component to ``path`` (weights in ``<path>.data``), static shapes taken from ``example``;
    ``split_concat``: split convolutions that read a concatenation (``edgefusion.graph.split_concat_convs``; off
    in the export: measured in ``bench/fidelity.py``, README "Fidelity")."""
    import torch

    module = component_module(pipe, component)
    in_names, out_names = IO_NAMES[component]
    args = tuple(torch.from_numpy(np.ascontiguousarray(example[n])) for n in in_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    log = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(log):
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            torch.onnx.export(module, args, str(path), dynamo=True, opset_version=OPSET, input_names=in_names,
                              output_names=out_names, external_data=True, optimize=True, verbose=False)
    except Exception as err:  # the exporter raises many types; keep the first line for the user
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise EdgeFusionError(f"torch.onnx (dynamo) could not export the {component}: {first}",
                              "report the model architecture; export works on the shipped presets") from None
    if split_concat:
        split_concat_convs_file(path)
    unshare_biases_file(path)
    return path
