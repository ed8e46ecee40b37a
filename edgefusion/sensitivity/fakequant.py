"""Quantization error simulated in PyTorch with the exporter's own math (``quant/emit.py``).

* activations: uint8/uint16 asymmetric, scale and zero point from onnxruntime's ``compute_scale_zp`` over the
  calibration min/max, ``QuantizeLinear`` rounding (half to even) and saturation, then ``DequantizeLinear``;
* int8 weights: symmetric per output channel (``quantize_weight_per_channel``);
* int32 biases: scale = input scale x weight scale (``quantize_bias``);
* uint8 constants (a layer norm's scale): asymmetric per tensor (``quantize_constant``);
* fp16: a round trip through float16 (the ``Cast`` pairs).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgefusion.quant.emit import activation_qparams, quantize_bias, quantize_constant, quantize_weight_per_channel


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


def uint_constant(w, bits: int):
    """The dequantized asymmetric per-tensor constant the QDQ graph computes with, and its scale."""
    import torch

    q, scale, zp = quantize_constant(w.numpy().astype(np.float32), bits)
    return torch.from_numpy(((q.astype(np.float64) - float(zp)) * float(scale)).astype(np.float32)), \
        np.array(scale, np.float32)


def fp16_weight(w):
    """A weight stored as float16 and cast back to float32."""
    return fp16_round(w)


def int8_weight_scale(w, axis: int) -> np.ndarray:
    """Per-channel scale of the int8 weight (what an int32 bias's scale is built from)."""
    return quantize_weight_per_channel(w.numpy().astype(np.float32), axis)[1]


def int32_bias(b, input_range: tuple[float, float], bits: int, weight_scale: np.ndarray):
    """The dequantized int32 bias the QDQ graph adds: scale = input activation scale x int8 weight scale."""
    import torch

    s_x, _ = activation_qparams(*input_range, bits)
    q, scale = quantize_bias(b.numpy(), s_x, weight_scale)
    return torch.from_numpy(q.astype(np.float32) * scale)
