"""edgefusion: quantize, tile and verify a Stable Diffusion model for a phone NPU.

Importing this package is cheap (no torch); the verbs live in :mod:`edgefusion.api`.
"""

__version__ = "0.1.0"
