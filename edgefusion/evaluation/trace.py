"""Per-step traces: the guided UNet noise prediction and the latents after every denoising step, from diffusers'
own PyTorch pipeline (a forward hook on the UNet + ``callback_on_step_end``) and from the ONNX pipeline
(``on_step``), with the same scheduler, seed and initial latents; and the per-step error between two traces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgefusion.metrics import psnr_db, sqnr_db


@dataclass
class StepTrace:
    """What one image's denoising loop produced at every step."""

    timesteps: list[float] = field(default_factory=list)
    noise: list[np.ndarray] = field(default_factory=list)  # guided noise prediction, per step
    latents: list[np.ndarray] = field(default_factory=list)  # latents after the scheduler step, per step

    def save(self, path: str | Path) -> None:
        """Write as one ``.npz``."""
        np.savez(path, timesteps=np.asarray(self.timesteps, np.float64), noise=np.stack(self.noise),
                 latents=np.stack(self.latents))

    @classmethod
    def load(cls, path: str | Path) -> StepTrace:
        """Inverse of :meth:`save`."""
        with np.load(path) as d:
            return cls([float(t) for t in d["timesteps"]], list(d["noise"]), list(d["latents"]))


def torch_traced_image(pipe, prompt: str, seed: int, steps: int, guidance_scale: float, height: int,
                       width: int) -> tuple[np.ndarray, StepTrace]:
    """Image (HxWx3 in [0, 1]) and trace of diffusers' ``StableDiffusionPipeline`` for one prompt and seed."""
    import torch

    trace, raw = StepTrace(), []

    def unet_hook(_module, _args, output):
        raw.append((output[0] if isinstance(output, tuple) else output.sample).detach().float().numpy())

    def on_step_end(_pipe, _step, t, kwargs):
        out = raw.pop()
        if out.shape[0] == 2:  # classifier-free guidance batch: (uncond, text), combined as diffusers does
            out = out[:1] + guidance_scale * (out[1:] - out[:1])
        trace.timesteps.append(float(t))
        trace.noise.append(out.astype(np.float32))
        trace.latents.append(kwargs["latents"].detach().float().numpy().copy())
        return {}

    handle = pipe.unet.register_forward_hook(unet_hook)
    try:
        with torch.no_grad():
            image = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance_scale, height=height,
                         width=width, generator=torch.Generator().manual_seed(seed), output_type="np",
                         return_dict=False, callback_on_step_end=on_step_end,
                         callback_on_step_end_tensor_inputs=["latents"])[0]
    finally:
        handle.remove()
    return np.asarray(image[0], np.float32), trace


def onnx_traced_image(pipe, prompt: str, seed: int, steps: int,
                      guidance_scale: float) -> tuple[np.ndarray, StepTrace]:
    """Image and trace of an :class:`~edgefusion.runtime.pipeline.OnnxStableDiffusion` for one prompt and seed."""
    trace = StepTrace()

    def on_step(_step, t, noise, latents):
        trace.timesteps.append(float(t))
        trace.noise.append(np.asarray(noise, np.float32))
        trace.latents.append(np.asarray(latents, np.float32).copy())

    image = pipe(prompt, seed=seed, steps=steps, guidance_scale=guidance_scale, on_step=on_step)
    return image, trace


def step_errors(reference: StepTrace, test: StepTrace) -> tuple[list[float], list[float]]:
    """Per step: SQNR (dB) of the test noise prediction vs the reference's, and PSNR (dB) of the test latents vs
    the reference's with the reference latents' range (max - min) at that step as the peak."""
    if len(reference.timesteps) != len(test.timesteps) or not np.allclose(reference.timesteps, test.timesteps):
        raise ValueError(f"traces have different timesteps: {reference.timesteps} vs {test.timesteps}")
    noise = [sqnr_db(r, t) for r, t in zip(reference.noise, test.noise)]
    latent = [psnr_db(r, t, peak=max(float(r.max() - r.min()), 1e-12)) for r, t in zip(reference.latents,
                                                                                    test.latents)]
    return noise, latent
