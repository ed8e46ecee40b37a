"""Run the real sampler and record what each component sees: UNet inputs at every denoising step, text-encoder
token ids, VAE-decoder latents. The result, a :class:`CalibrationSet`, saves to ``.npz`` plus a JSON index."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgefusion.errors import EdgeFusionError

COMPONENTS = ("text_encoder", "unet", "vae_decoder")


@dataclass
class Sample:
    """One batch-1 input set of one component, with where it came from."""

    inputs: dict[str, np.ndarray]
    prompt_index: int
    step: int | None = None  # denoising step (UNet only)
    branch: str = "cond"  # "cond" or "uncond" (classifier-free guidance)


@dataclass
class CalibrationSet:
    """Captured inputs per component (``text_encoder``, ``unet``, ``vae_decoder``)."""

    samples: dict[str, list[Sample]] = field(default_factory=lambda: {c: [] for c in COMPONENTS})
    prompts: list[str] = field(default_factory=list)
    steps: int = 0
    guidance_scale: float = 1.0

    def count(self) -> dict[str, int]:
        """Number of samples per component."""
        return {c: len(s) for c, s in self.samples.items()}

    def digest(self) -> str:
        """A content hash (sha256 over every array), so reports can name the data they were computed on."""
        h = hashlib.sha256()
        for comp in COMPONENTS:
            for s in self.samples[comp]:
                for k in sorted(s.inputs):
                    h.update(comp.encode() + k.encode())
                    h.update(np.ascontiguousarray(s.inputs[k]).tobytes())
        return h.hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        """Write ``<path>.npz`` (arrays) and ``<path>.json`` (index)."""
        path = Path(path)
        arrays, index = {}, {"prompts": self.prompts, "steps": self.steps, "guidance_scale": self.guidance_scale,
                              "samples": {}}
        for comp in COMPONENTS:
            index["samples"][comp] = []
            for i, s in enumerate(self.samples[comp]):
                for k, v in s.inputs.items():
                    arrays[f"{comp}/{i}/{k}"] = v
                index["samples"][comp].append({"prompt_index": s.prompt_index, "step": s.step, "branch": s.branch,
                                               "inputs": sorted(s.inputs)})
        np.savez(path.with_suffix(".npz"), **arrays)
        path.with_suffix(".json").write_text(json.dumps(index, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "CalibrationSet":
        """Inverse of :meth:`save`."""
        path = Path(path)
        index = json.loads(path.with_suffix(".json").read_text())
        cal = cls(prompts=index["prompts"], steps=index["steps"], guidance_scale=index["guidance_scale"])
        with np.load(path.with_suffix(".npz")) as data:
            for comp in COMPONENTS:
                for i, meta in enumerate(index["samples"][comp]):
                    cal.samples[comp].append(Sample({k: data[f"{comp}/{i}/{k}"] for k in meta["inputs"]},
                                                    meta["prompt_index"], meta["step"], meta["branch"]))
        return cal


def _check_finite(comp: str, sample: Sample) -> None:
    for name, arr in sample.inputs.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            where = f"prompt {sample.prompt_index}" + (f", step {sample.step}" if sample.step is not None else "")
            raise EdgeFusionError(
                f"calibration captured NaN/inf in {comp} input '{name}' ({where})",
                "the float model itself produces non-finite values: check its weights (or run it in float32)")


def capture_calibration(pipe, prompts: list[str], steps: int, guidance_scale: float, height: int, width: int,
                        seed: int = 0, progress: bool = True, desc: str = "calibration") -> CalibrationSet:
    """Sample every prompt with the pipeline's own scheduler and record batch-1 inputs of all three components.

    With classifier-free guidance each UNet call carries an unconditional and a conditional half; both are kept,
    as separate samples tagged with their denoising step.
    """
    import torch
    from tqdm.auto import tqdm

    cal = CalibrationSet(prompts=list(prompts), steps=steps, guidance_scale=guidance_scale)
    state = {"prompt": 0, "step": 0}
    cfg = guidance_scale > 1.0

    def unet_hook(_module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        ehs = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        b = sample.shape[0]
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1).expand(b)
        for i in range(b):
            branch = ("uncond" if i < b // 2 else "cond") if cfg else "cond"
            cal.samples["unet"].append(Sample(
                {"sample": sample[i:i + 1].float().numpy().copy(), "timestep": t[i:i + 1].numpy().copy(),
                 "encoder_hidden_states": ehs[i:i + 1].float().numpy().copy()},
                state["prompt"], state["step"], branch))
        state["step"] += 1

    def text_hook(_module, args, kwargs):
        ids = args[0] if args else kwargs["input_ids"]
        for i in range(ids.shape[0]):
            cal.samples["text_encoder"].append(Sample({"input_ids": ids[i:i + 1].to(torch.int64).numpy().copy()},
                                                      state["prompt"]))

    handles = [pipe.unet.register_forward_pre_hook(unet_hook, with_kwargs=True),
               pipe.text_encoder.register_forward_pre_hook(text_hook, with_kwargs=True)]
    try:
        for pi, prompt in enumerate(tqdm(prompts, desc=desc, disable=not progress, leave=False)):
            state.update(prompt=pi, step=0)
            gen = torch.Generator().manual_seed(seed + pi)
            with torch.no_grad():
                latents = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance_scale, height=height,
                               width=width, generator=gen, output_type="latent", return_dict=False)[0]
            z = latents / pipe.vae.config.scaling_factor
            cal.samples["vae_decoder"].append(Sample({"latent_sample": z.float().numpy().copy()}, pi))
    finally:
        for h in handles:
            h.remove()
    for comp in COMPONENTS:
        for s in cal.samples[comp]:
            _check_finite(comp, s)
    return cal
