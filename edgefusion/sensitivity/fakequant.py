"""Quantization error simulated in PyTorch with the exporter's own math (``quant/emit.py``).

* activations: uint8/uint16 asymmetric, scale and zero point from onnxruntime's ``compute_scale_zp`` over the
  calibration min/max, ``QuantizeLinear`` rounding (half to even) and saturation, then ``DequantizeLinear``;
* int8 weights: symmetric per output channel (``quantize_weight_per_channel``);
* fp16: a round trip through float16 (the ``Cast`` pairs).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgefusion.quant.emit import activation_qparams, quantize_weight_per_channel


def activation_quantizer(rmin: float, rmax: float, bits: int) -> Callable:
    """``x -> DequantizeLinear(QuantizeLinear(x))`` for a tensor with calibration range ``[rmin, rmax]``."""
    import torch

    scale, zp = activation_qparams(rmin, rmax, bits)
    scale, zp, qmax = float(scale), float(zp), float(2 ** bits - 1)

    def fq(x: torch.Tensor) -> torch.Tensor:
        return (torch.clamp(torch.round(x / scale) + zp, 0.0, qmax) - zp) * scale
    return fq


def fp16_round(x):
    """Round a float32 tensor through float16 (values beyond the fp16 range become +-inf, as on the device)."""
    import torch

    return x.to(torch.float16).to(torch.float32)


def int8_weight(w, axis: int):
    """The dequantized int8 per-channel weight the QDQ graph computes with."""
    import torch

    q, scale = quantize_weight_per_channel(w.numpy().astype(np.float32), axis)
    shape = [1] * w.dim()
    shape[axis] = -1
    return torch.from_numpy(q.astype(np.float32) * scale.reshape(shape))


def fp16_weight(w):
    """A weight stored as float16 and cast back to float32."""
    return fp16_round(w)
