"""PyTorch implementations of the ONNX operators a diffusers UNet exports to (dynamo exporter, opset 21).

Every function takes ``(inputs, attrs, batch)``: ``inputs`` are torch tensors (float activations and weights) or
numpy arrays (integer shape constants), ``attrs`` the node attributes, ``batch`` how many samples are stacked on the
leading dimension of a graph that was exported for batch 1 (shape constants are rescaled accordingly).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

OPS: dict[str, Callable] = {}
# ops whose attributes must not touch the leading (batch) dimension for stacked samples to stay independent
BATCH_AXIS_ATTR = {"Concat": "axis", "Split": "axis", "Softmax": "axis", "Gather": "axis", "Flatten": "axis"}


def op(*names: str):
    """Decorator: register an implementation for ONNX op types ``names``."""
    def deco(fn):
        for n in names:
            OPS[n] = fn
        return fn
    return deco


def _ints(x) -> list[int]:
    return [int(v) for v in (x.tolist() if isinstance(x, (np.ndarray, torch.Tensor)) else x)]


def _elementwise(fn):
    return lambda ins, attrs, batch: fn(*ins)


for _name, _fn in {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div, "Pow": torch.pow,
                   "Sigmoid": torch.sigmoid, "Sin": torch.sin, "Cos": torch.cos, "Exp": torch.exp, "Erf": torch.erf,
                   "Tanh": torch.tanh, "Sqrt": torch.sqrt, "Neg": torch.neg, "Reciprocal": torch.reciprocal,
                   "Relu": torch.relu, "Identity": lambda x: x, "MatMul": torch.matmul, "Where": torch.where,
                   "Equal": torch.eq, "Less": torch.lt, "Greater": torch.gt}.items():
    OPS[_name] = _elementwise(_fn)


@op("Conv")
def _conv(ins, attrs, batch):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    nd = w.dim() - 2
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise NotImplementedError("Conv auto_pad")
    pads = _ints(attrs.get("pads", [0] * 2 * nd))
    strides = _ints(attrs.get("strides", [1] * nd))
    dil = _ints(attrs.get("dilations", [1] * nd))
    group = int(attrs.get("group", 1))
    begin, end = pads[:nd], pads[nd:]
    if begin != end:
        x = F.pad(x, [p for i in reversed(range(nd)) for p in (begin[i], end[i])])
        begin = [0] * nd
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return conv(x, w, b, stride=strides, padding=begin, dilation=dil, groups=group)


@op("Gemm")
def _gemm(ins, attrs, batch):
    a, b = ins[0], ins[1]
    if attrs.get("transA", 0):
        a = a.transpose(0, 1)
    if attrs.get("transB", 0):
        b = b.transpose(0, 1)
    y = attrs.get("alpha", 1.0) * (a @ b)
    if len(ins) > 2 and ins[2] is not None:
        y = y + attrs.get("beta", 1.0) * ins[2]
    return y


@op("Softmax")
def _softmax(ins, attrs, batch):
    return torch.softmax(ins[0], dim=int(attrs.get("axis", -1)))


@op("GroupNormalization")
def _group_norm(ins, attrs, batch):
    x, scale, bias = ins
    return F.group_norm(x, int(attrs["num_groups"]), scale, bias, float(attrs.get("epsilon", 1e-5)))


@op("LayerNormalization")
def _layer_norm(ins, attrs, batch):
    x, scale = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    axis = int(attrs.get("axis", -1)) % x.dim()
    return F.layer_norm(x, x.shape[axis:], scale, bias, float(attrs.get("epsilon", 1e-5)))


@op("Gelu")
def _gelu(ins, attrs, batch):
    approx = attrs.get("approximate", b"none")
    return F.gelu(ins[0], approximate=approx.decode() if isinstance(approx, bytes) else approx)


@op("Reshape")
def _reshape(ins, attrs, batch):
    x, shape = ins[0], _ints(ins[1])
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    if batch > 1 and shape and shape[0] > 0:
        shape[0] *= batch  # the batch-1 graph's leading dimension now carries `batch` stacked samples
    return x.reshape(shape)


@op("Transpose")
def _transpose(ins, attrs, batch):
    perm = _ints(attrs.get("perm", list(reversed(range(ins[0].dim())))))
    return ins[0].permute(perm)


@op("Unsqueeze")
def _unsqueeze(ins, attrs, batch):
    x = ins[0]
    axes = _ints(ins[1] if len(ins) > 1 else attrs["axes"])
    rank = x.dim() + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return x


@op("Squeeze")
def _squeeze(ins, attrs, batch):
    x = ins[0]
    axes = _ints(ins[1]) if len(ins) > 1 else _ints(attrs.get("axes", []))
    if not axes:
        return x.squeeze()
    for a in sorted((a % x.dim() for a in axes), reverse=True):
        x = x.squeeze(a)
    return x


@op("Concat")
def _concat(ins, attrs, batch):
    return torch.cat(list(ins), dim=int(attrs["axis"]))


@op("Split")
def _split(ins, attrs, batch):
    x, axis = ins[0], int(attrs.get("axis", 0))
    if len(ins) > 1 and ins[1] is not None:
        return list(torch.split(x, _ints(ins[1]), dim=axis))
    n = int(attrs["num_outputs"])
    size = -(-x.shape[axis] // n)
    return list(torch.split(x, size, dim=axis))


@op("Slice")
def _slice(ins, attrs, batch):
    x = ins[0]
    starts, ends = _ints(ins[1]), _ints(ins[2])
    axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
    steps = _ints(ins[4]) if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    idx = [slice(None)] * x.dim()
    for s, e, a, st in zip(starts, ends, axes, steps):
        if st <= 0:
            raise NotImplementedError("Slice with a non-positive step")
        a %= x.dim()
        if a == 0 and batch > 1:
            raise NotImplementedError("Slice on the batch axis")
        n = x.shape[a]
        s = max(0, min(n, s + n if s < 0 else s))
        e = max(0, min(n, e + n if e < 0 else e))
        idx[a] = slice(s, e, st)
    return x[tuple(idx)]


@op("Resize")
def _resize(ins, attrs, batch):
    x = ins[0]
    mode = attrs.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    ctm = attrs.get("coordinate_transformation_mode", b"half_pixel")
    ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
    scales = ins[2] if len(ins) > 2 and ins[2] is not None and np.size(ins[2]) else None
    sizes = ins[3] if len(ins) > 3 and ins[3] is not None else None
    if mode == "nearest" and ctm == "asymmetric" and attrs.get("nearest_mode", b"floor") in (b"floor", "floor"):
        tmode, align = "nearest", None
    elif mode == "linear" and ctm in ("half_pixel", "pytorch_half_pixel"):
        tmode, align = "bilinear", False
    elif mode == "linear" and ctm == "align_corners":
        tmode, align = "bilinear", True
    else:
        raise NotImplementedError(f"Resize mode={mode} coordinate_transformation_mode={ctm}")
    if sizes is not None:
        return F.interpolate(x, size=_ints(sizes)[2:], mode=tmode, align_corners=align)
    sf = [float(s) for s in np.asarray(scales if not isinstance(scales, torch.Tensor) else scales.numpy())][2:]
    return F.interpolate(x, scale_factor=sf, mode=tmode, align_corners=align)


@op("Cast")
def _cast(ins, attrs, batch):
    to = {1: torch.float32, 10: torch.float16, 11: torch.float64, 7: torch.int64, 6: torch.int32, 9: torch.bool}
    x = ins[0]
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    return x.to(to[int(attrs["to"])])


@op("Expand")
def _expand(ins, attrs, batch):
    x, shape = ins[0], _ints(ins[1])
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(shape)))


@op("Flatten")
def _flatten(ins, attrs, batch):
    x, axis = ins[0], int(attrs.get("axis", 1))
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


@op("ReduceMean")
def _reduce_mean(ins, attrs, batch):
    x = ins[0]
    axes = _ints(ins[1]) if len(ins) > 1 else _ints(attrs.get("axes", list(range(x.dim()))))
    return x.mean(dim=axes, keepdim=bool(attrs.get("keepdims", 1)))
