"""Tiny randomly initialised stand-ins for the weights CLIP score and FID need (so the plumbing is tested offline):
a CLIP model + processor saved with save_pretrained, a TorchScript feature network with the call convention of
StyleGAN3's inception-2015-12-05.pt, and reference statistics of matching width."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FEATURES = 8


def tiny_clip(folder: Path) -> Path:
    """A 1-layer random CLIP (32x32 images, patch 8) with the project's locally built tokenizer."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor
    from transformers.utils import logging

    from edgefusion.models.tokenizer import build_clip_tokenizer

    logging.set_verbosity_error()
    tok = build_clip_tokenizer(model_max_length=77)
    vocab = len(tok)
    torch.manual_seed(0)
    text = {"vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 77, "projection_dim": 16,
            "bos_token_id": vocab - 2, "eos_token_id": vocab - 1, "pad_token_id": vocab - 1}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8, "projection_dim": 16}
    cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    CLIPModel(cfg).save_pretrained(str(folder))
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tok)
    processor.save_pretrained(str(folder))
    return folder


def tiny_feature_net(path: Path) -> Path:
    """A scripted conv net: ``net(uint8 NCHW, return_features=True) -> (N, FEATURES)``."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, FEATURES, 3, padding=1)

        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            y = torch.tanh(self.conv(x.float() / 127.5 - 1.0))
            return y.mean(dim=(2, 3)) if return_features else y.sum(dim=(1, 2, 3))

    torch.manual_seed(0)
    torch.jit.script(Net().eval()).save(str(path))
    return path


def reference_stats(path: Path, width: int = FEATURES, seed: int = 0) -> Path:
    """``mu``/``sigma`` of random features, as pytorch-fid ``--save-stats`` writes them."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(0, 0.3, (64, width))
    np.savez(path, mu=feats.mean(0), sigma=np.cov(feats, rowvar=False))
    return path
