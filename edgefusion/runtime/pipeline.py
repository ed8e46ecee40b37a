"""Text-to-image on CPU over an export folder: onnxruntime runs the graphs, a diffusers scheduler steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgefusion.errors import EdgeFusionError
from edgefusion.runtime.session import open_session, run_session


def initial_latents(seed: int, shape: tuple[int, ...], init_noise_sigma: float):
    """The same starting noise diffusers' StableDiffusionPipeline draws for ``generator=manual_seed(seed)``."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    gen = torch.Generator().manual_seed(seed)
    return randn_tensor(shape, generator=gen, dtype=torch.float32) * init_noise_sigma


def read_export_manifest(export_dir: str | Path) -> dict:
    """The manifest of an export folder; a one-line error for anything that is not one (no heavy imports)."""
    folder = Path(export_dir)
    if not folder.is_dir():
        raise EdgeFusionError(f"export folder '{folder}' does not exist", "pass a folder written by `edgefusion export`")
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise EdgeFusionError(f"'{folder}' has no manifest.json, so it is not an edgefusion export",
                              "pass a folder written by `edgefusion export`")
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise EdgeFusionError(f"'{manifest}' is unreadable ({type(err).__name__})",
                              "re-run `edgefusion export`") from None
    if not isinstance(data, dict) or not {"shapes", "source"} <= set(data):
        raise EdgeFusionError(f"'{manifest}' is not an edgefusion export manifest",
                              "pass a folder written by `edgefusion export`")
    return data


class OnnxStableDiffusion:
    """Loads ``text_encoder/``, ``unet/``, ``vae_decoder/`` (each ``model.onnx``), ``tokenizer/`` and ``scheduler/``."""

    def __init__(self, export_dir: str | Path, graphs: dict[str, Path] | None = None, low_memory: bool = False,
                 ort_defaults: bool = False):
        self.dir = Path(export_dir)
        self.manifest = read_export_manifest(self.dir)  # before the heavy imports: a wrong folder fails at once
        import diffusers
        from transformers import CLIPTokenizer

        self.graphs = graphs or {c: self._graph_files(c) for c in ("text_encoder", "unet", "vae_decoder")}
        missing = [str(p) for g in self.graphs.values() for p in (g if isinstance(g, list) else [g])
                   if not Path(p).is_file()]
        if missing:
            raise EdgeFusionError(f"export folder '{self.dir}' lacks {missing[0]}", "re-run `edgefusion export`")
        # low_memory: open each graph only while it runs (peak = the largest graph, not all three together)
        self.low_memory = low_memory
        self.ort_defaults = ort_defaults  # onnxruntime's default session options (as optimum/diffusers open graphs)
        self._sessions = {} if low_memory else {c: self._open(p) for c, p in self.graphs.items()}
        self.tokenizer = CLIPTokenizer.from_pretrained(str(self.dir / "tokenizer"))
        sched_cfg = json.loads((self.dir / "scheduler" / "scheduler_config.json").read_text())
        self.scheduler = getattr(diffusers, sched_cfg["_class_name"]).from_pretrained(str(self.dir / "scheduler"))
        self.latent_shape = tuple(self.manifest["shapes"]["latent"])
        self.scaling_factor = float(self.manifest["shapes"]["vae_scaling_factor"])

    def _graph_files(self, component: str):
        """The NPU graph (``unet/npu.onnx``, ``<component>/model.onnx``), or its sub-graphs when partitioned."""
        from edgefusion.runtime.layout import npu_graph_files

        return npu_graph_files(self.dir, component, self.manifest)

    def _open(self, graph):
        def opener(p):
            return open_session(p, ort_defaults=self.ort_defaults)

        if isinstance(graph, list):
            from edgefusion.runtime.chained import ChainedSession

            return ChainedSession(graph, opener)
        return opener(graph)

    def _session(self, component: str):
        return self._sessions.get(component) or self._open(self.graphs[component])

    def _release(self) -> None:
        """low_memory: hand the memory of the session just dropped back to the system before the next opens."""
        if self.low_memory:
            from edgefusion.runtime.session import release_freed_memory

            release_freed_memory()

    def _encode(self, session, text: str) -> np.ndarray:
        ids = self.tokenizer(text, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="np").input_ids.astype(np.int64)
        return run_session(session, {"input_ids": ids})[0]

    def __call__(self, prompt: str, seed: int = 0, steps: int | None = None, guidance_scale: float | None = None,
                 record=None, on_step=None) -> np.ndarray:
        """Generate one image; returns float32 HxWx3 in [0, 1]. ``record(step, t, noise_pred)`` sees every step;
        ``on_step(step, t, noise_pred, latents)`` also sees the latents after the scheduler step."""
        import torch

        sampler = self.manifest["source"]["sampler"]
        steps = sampler["num_inference_steps"] if steps is None else steps
        if steps < 1:
            raise EdgeFusionError(f"steps must be at least 1, got {steps}", "pass --steps 1 or more")
        guidance_scale = sampler["guidance_scale"] if guidance_scale is None else guidance_scale
        if not (np.isfinite(guidance_scale) and guidance_scale >= 0):
            raise EdgeFusionError(f"the guidance scale must be a finite number >= 0, got {guidance_scale}",
                                  "pass e.g. --guidance-scale 7.5 (1 or less: no classifier-free guidance)")
        text_encoder = self._session("text_encoder")
        cond = self._encode(text_encoder, prompt)
        uncond = self._encode(text_encoder, "") if guidance_scale > 1.0 else None
        del text_encoder
        self._release()
        self.scheduler.set_timesteps(steps)
        latents = initial_latents(seed, self.latent_shape, float(self.scheduler.init_noise_sigma))
        unet = self._session("unet")
        for i, t in enumerate(self.scheduler.timesteps):
            x = self.scheduler.scale_model_input(latents, t).numpy().astype(np.float32)
            ts = np.array([float(t)], np.float32)
            noise = run_session(unet, {"sample": x, "timestep": ts, "encoder_hidden_states": cond})[0]
            if uncond is not None:
                base = run_session(unet, {"sample": x, "timestep": ts, "encoder_hidden_states": uncond})[0]
                noise = base + guidance_scale * (noise - base)
            if record:
                record(i, float(t), noise)
            latents = self.scheduler.step(torch.from_numpy(noise), t, latents, return_dict=False)[0]
            if on_step:
                on_step(i, float(t), noise, latents.numpy())
        del unet
        self._release()
        z = (latents / self.scaling_factor).numpy().astype(np.float32)
        image = run_session(self._session("vae_decoder"), {"latent_sample": z})[0]
        return np.clip(image[0].transpose(1, 2, 0) / 2 + 0.5, 0, 1).astype(np.float32)


def torch_reference_image(pipe, prompt: str, seed: int, steps: int, guidance_scale: float, height: int,
                          width: int) -> np.ndarray:
    """The float PyTorch pipeline's image for the same prompt/seed/scheduler, HxWx3 in [0, 1]."""
    import torch

    with torch.no_grad():
        out = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance_scale, height=height, width=width,
                   generator=torch.Generator().manual_seed(seed), output_type="np", return_dict=False)[0]
    return np.asarray(out[0], np.float32)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an HxWx3 [0, 1] float image as PNG."""
    from PIL import Image

    path = Path(path)
    if not path.parent.is_dir():
        raise EdgeFusionError(f"folder '{path.parent}' does not exist", "create it or pass another --out")
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(path, format="PNG")
    return path
