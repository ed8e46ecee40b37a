"""The embedded default model: a small Stable Diffusion trained by this project on procedural shape images."""
