"""CLIP score, 100 x max(cosine(image embedding, text embedding), 0) (Hessel et al. 2021 with w = 100, the
definition torchmetrics' ``CLIPScore`` uses), with a ``transformers`` CLIP model the user keeps in a local folder;
nothing is downloaded. A missing folder or file is one error that names it and the flag to pass.

The embeddings come from ``CLIPModel``'s forward (``image_embeds``/``text_embeds``, projected and normalised), not
through torchmetrics' ``CLIPScore``: with transformers 5 ``get_image_features`` returns a model output object and
torchmetrics 1.9 fails on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefusion.errors import EdgeFusionError

FLAG = "--clip-model"
_HOW = (f"pass {FLAG} DIR: a folder written by CLIPModel.save_pretrained and CLIPProcessor.save_pretrained (e.g. of "
        "openai/clip-vit-large-patch14) holding config.json, model.safetensors, preprocessor_config.json (or "
        "processor_config.json) and the tokenizer files")


def check_clip_folder(folder: str | Path | None) -> Path:
    """The CLIP folder if it is complete; otherwise an error naming the first missing file and how to pass it."""
    if folder is None:
        raise EdgeFusionError("CLIP score needs CLIP weights and no CLIP model folder was given", _HOW)
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise EdgeFusionError(f"CLIP model folder '{path}' does not exist or is not a folder", _HOW)
    needed = [("config.json",), ("model.safetensors",), ("preprocessor_config.json", "processor_config.json"),
              ("tokenizer.json", "vocab.json")]
    for options in needed:
        if not any((path / name).is_file() for name in options):
            raise EdgeFusionError(f"CLIP model folder '{path}' has no {' or '.join(options)}", _HOW)
    return path.resolve()


class ClipScorer:
    """Scores images against their prompts with a local CLIP model (CPU, eval mode)."""

    def __init__(self, folder: str | Path):
        """Load the model and processor from ``folder`` (checked first; local safetensors only)."""
        from transformers import CLIPModel, CLIPProcessor
        from transformers.utils import logging as hf_logging

        self.path = check_clip_folder(folder)
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the PIL image-processor fallback (no torchvision) is expected
        hf_logging.disable_progress_bar()
        try:
            self.model = CLIPModel.from_pretrained(str(self.path), local_files_only=True, use_safetensors=True).eval()
            self.processor = CLIPProcessor.from_pretrained(str(self.path), local_files_only=True)
        except Exception as err:  # a broken folder is the user's file problem, reported in one line
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise EdgeFusionError(f"could not load CLIP from '{self.path}' ({first})", _HOW) from None
        finally:
            hf_logging.set_verbosity(level)
            hf_logging.enable_progress_bar()
        self.max_tokens = int(self.model.config.text_config.max_position_embeddings)

    def __call__(self, image: np.ndarray, text: str) -> float:
        """CLIP score of an HxWx3 image in [0, 1] against ``text`` (text truncated to the model's length)."""
        import torch

        pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
        inputs = self.processor(text=[text], images=[pixels], return_tensors="pt", padding=True, truncation=True,
                                max_length=self.max_tokens)
        with torch.no_grad():
            out = self.model(**inputs)
        img = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
        txt = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
        return float(100 * torch.clamp((img * txt).sum(-1), min=0)[0])
