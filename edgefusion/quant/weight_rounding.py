"""Output-aware rounding of int8 weights (GPTQ, Frantar et al. 2022) for the layers that read 16-bit tensors.

Round to nearest minimises each weight's own error; what matters is the layer's *output* error on the inputs it
sees. GPTQ (:mod:`edgefusion.quant.gptq`) rounds one input feature of the weight at a time and spreads the rounding
error over the features not yet rounded, weighted by the inverse of the inputs' second moment ``H = X^T X`` (the
Hessian of the output error), so correlated input features compensate each other. Scales stay those of round to
nearest (symmetric per output channel), so the graph, its biases and every client are unchanged: only the int8
values move.

Where it is applied: Conv (``group`` 1), MatMul and Gemm layers whose int8 per-channel weights read a 16-bit
activation. There the weights are most of the error that is left (held-out prompts, ``crossval`` ranges, README
"Fidelity", ``python bench/fidelity.py``, measured after the prompt-split fix): ``w8a16`` text encoder 48.72 ->
52.72 dB on the embedded model and 38.57 -> 41.59 dB on ``tiny``; embedded UNet ``w8a16`` 43.24 -> 49.14 dB and
``default`` 42.00 -> 45.33 dB with the convolutions included. Behind an 8-bit input the input's own rounding
dominates and GPTQ moved nothing (measured before that fix: W8A8 text encoder 33.44 -> 33.46 dB, W8A8 UNet 19.60 ->
19.62 dB), so those layers keep round to nearest.

``H`` is streamed: passes over (a subset of) the calibration samples. Each layer input's ``X^T X`` is computed
inside the float graph, right after the tensor's producer, by one Gemm; a convolution's input first goes through a
depthwise convolution with one-hot kernels (its patches, in the weight's ``[C, kh, kw]`` order, at the layer's pads,
strides and dilations). A pass collects at most ``HESSIAN_PASS_BYTES`` of Hessians, rounds their weights and drops
them, so memory stays one inference plus one pass whatever the number of layers; the passes' compute is bounded
(``HESSIAN_MACS``: the float graph runs plus the Gemms). The manifest's ``weight_rounding`` says how many layers
were rounded of how many, from how many samples, in how many passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgefusion.quant.graph_index import GraphIndex
from edgefusion.quant.plan import QuantPlan, quantized_source
from edgefusion.quant.ranges import augmented_graph
from edgefusion.runtime.session import open_session, release_freed_memory, run_session

WEIGHT_ROUNDING = ("gptq", "nearest")
HESSIAN_PASS_BYTES = 32 * 2 ** 20  # float32 Hessians of one pass (each run returns as much again)
HESSIAN_MAX_BYTES = 256 * 2 ** 20  # one layer input's Hessian, at most (a pass of its own); larger: round to nearest
HESSIAN_MACS = 2e12  # compute budget of the pass: float graph runs plus the Hessian Gemms, over all samples
HESSIAN_SAMPLES = 64  # at most (the embedded UNet at w8a16: 48.53 dB from 64 of its 320 samples, 48.14 from all)


@dataclass(frozen=True)
class Patches:
    """How a convolution reads its input: kernel size, pads (top, left, bottom, right), strides, dilations."""

    kernel: tuple[int, int]
    pads: tuple[int, int, int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]


@dataclass(frozen=True)
class Target:
    """One weight GPTQ rounds: the activation its layer reads and how (``patches`` for a convolution)."""

    weight: str
    input: str
    features: int  # rows of the Hessian: the weight's input features
    transposed: bool  # stored with the output channel first ([out, in], or a Conv's [out, C, kh, kw])
    patches: Patches | None = None

    @property
    def key(self) -> tuple:
        """Targets with the same key share one Hessian (e.g. q, k and v projections of one input)."""
        return self.input, self.patches


def _conv_patches(node: onnx.NodeProto, kernel: tuple[int, int]) -> Patches | None:
    a = {x.name: x for x in node.attribute}
    if a.get("group") is not None and a["group"].i != 1:
        return None
    if a.get("auto_pad") is not None and a["auto_pad"].s not in (b"", b"NOTSET"):
        return None
    ints = {k: tuple(v.ints) for k, v in a.items() if v.ints}
    return Patches(kernel, ints.get("pads", (0, 0, 0, 0)), ints.get("strides", (1, 1)), ints.get("dilations", (1, 1)))


def gptq_targets(model: onnx.ModelProto, plan: QuantPlan) -> list[Target]:
    """The int8 per-channel weights of Conv (group 1, 2-D), MatMul and Gemm nodes whose activation input is 16-bit,
    in graph order."""
    idx = GraphIndex.build(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    stop = frozenset(plan.act_bits)
    out: list[Target] = []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Conv") or len(node.input) < 2:
            continue
        w = node.input[1]
        if plan.int8_weights.get(w) is None:
            continue  # not int8, or per tensor
        if plan.act_bits.get(quantized_source(node.input[0], producer, stop)) != 16:
            continue
        dims = list(idx.initializers[w].dims)
        if node.op_type == "Conv":
            patches = _conv_patches(node, tuple(dims[2:])) if len(dims) == 4 else None
            if patches is not None:
                out.append(Target(w, node.input[0], dims[1] * dims[2] * dims[3], True, patches))
            continue
        attrs = {a.name: a.i for a in node.attribute}
        if len(dims) != 2 or attrs.get("transA", 0):
            continue
        transposed = node.op_type == "Gemm" and bool(attrs.get("transB", 0))
        out.append(Target(w, node.input[0], dims[1] if transposed else dims[0], transposed))
    return out


def _hessian_nodes(target: Target, channels: int, p: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes writing ``p`` = ``X^T X`` of the target's input features, and their constants."""
    n = target.features
    if target.patches is None:  # a linear layer: rows are tokens
        return [helper.make_node("Reshape", [target.input, p + "_rows"], [p + "_x"], name=p + "_Reshape"),
                helper.make_node("Gemm", [p + "_x", p + "_x"], [p], transA=1, name=p + "_Gemm")], \
            [numpy_helper.from_array(np.array([-1, n], np.int64), p + "_rows")]
    pt = target.patches
    kh, kw = pt.kernel
    onehot = np.zeros((n, 1, kh, kw), np.float32)  # output channel c*kh*kw + i*kw + j picks x[c] at offset (i, j)
    onehot.reshape(n, kh * kw)[np.arange(n), np.arange(n) % (kh * kw)] = 1.0
    inits = [numpy_helper.from_array(np.array([n, -1], np.int64), p + "_rows"),  # features x positions
             numpy_helper.from_array(onehot, p + "_onehot"),
             numpy_helper.from_array(np.array([0, n, -1], np.int64), p + "_per_image")]
    nodes = [helper.make_node("Conv", [target.input, p + "_onehot"], [p + "_patches"], group=channels,
                              kernel_shape=list(pt.kernel), pads=list(pt.pads), strides=list(pt.strides),
                              dilations=list(pt.dilations), name=p + "_Patches"),
             helper.make_node("Reshape", [p + "_patches", p + "_per_image"], [p + "_3d"], name=p + "_Reshape3"),
             helper.make_node("Transpose", [p + "_3d"], [p + "_t"], perm=[1, 0, 2], name=p + "_Transpose"),
             helper.make_node("Reshape", [p + "_t", p + "_rows"], [p + "_x"], name=p + "_Reshape"),
             helper.make_node("Gemm", [p + "_x", p + "_x"], [p], transB=1, name=p + "_Gemm")]
    return nodes, inits


def collect_input_hessians(model_path: Path, targets: Sequence[Target], channels: dict[str, int],
                           feeds: Sequence[dict[str, np.ndarray]], progress: bool = False) -> dict[tuple, np.ndarray]:
    """``sum X^T X`` (float32, ``[features, features]``) of each target key's input features over ``feeds``;
    ``channels``: a convolution weight's input channels."""
    from tqdm.auto import tqdm

    reducers: dict[str, list[onnx.NodeProto]] = {}
    inits, outs, keys = [], [], []
    for t in {t.key: t for t in targets}.values():
        p = f"__hessian{len(keys)}"
        nodes, consts = _hessian_nodes(t, channels.get(t.weight, 0), p)
        reducers.setdefault(t.input, []).extend(nodes)
        inits += consts
        outs.append(p)
        keys.append(t.key)
    aug = augmented_graph(Path(model_path), reducers, inits, outs, ".hessians.onnx")
    total: dict[tuple, np.ndarray] = {}
    try:
        sess = open_session(aug)
        first = len(sess.get_outputs()) - len(outs)
        for feed in tqdm(feeds, desc="weight rounding", disable=not progress, leave=False):
            for k, h in zip(keys, run_session(sess, feed)[first:]):
                if k in total:
                    total[k] += h
                else:
                    total[k] = h.astype(np.float32, copy=True)
        del sess
    finally:
        aug.unlink(missing_ok=True)
        release_freed_memory()
    return total


def _rows_per_sample(shapes: dict, target: Target) -> int:
    """Rows of the target's ``X`` per calibration sample (tokens, or output positions of a convolution), from the
    graph's inferred ``shapes``; 0 when unknown."""
    dims = (shapes.get(target.input) or (None,))[0] or []
    if not dims or any(d is None for d in dims):
        return 0
    if target.patches is None:
        return int(np.prod(dims[:-1]))
    pt, (n, _, h, w) = target.patches, dims
    oh = (h + pt.pads[0] + pt.pads[2] - pt.dilations[0] * (pt.kernel[0] - 1) - 1) // pt.strides[0] + 1
    ow = (w + pt.pads[1] + pt.pads[3] - pt.dilations[1] * (pt.kernel[1] - 1) - 1) // pt.strides[1] + 1
    return int(n * oh * ow)


def _passes(shared: dict[tuple, list[Target]]) -> list[list[Target]]:
    """Targets grouped into passes whose Hessians fit ``HESSIAN_PASS_BYTES`` together, smallest first (one larger
    than that is a pass of its own up to ``HESSIAN_MAX_BYTES``; beyond, it keeps round to nearest)."""
    passes: list[list[Target]] = []
    used = HESSIAN_PASS_BYTES  # start a new pass
    for group in sorted(shared.values(), key=lambda g: g[0].features):
        cost = group[0].features ** 2 * 4
        if cost > HESSIAN_MAX_BYTES:
            continue
        if used + cost > HESSIAN_PASS_BYTES:
            passes.append([])
            used = 0
        passes[-1] += group
        used += cost
    return passes


def round_weights(model_path: Path, plan: QuantPlan, feeds: Sequence[dict[str, np.ndarray]],
                  progress: bool = False) -> tuple[dict[str, np.ndarray], dict]:
    """GPTQ-rounded int8 values of the plan's target weights (``weight -> int8 array``, at the scales
    :func:`~edgefusion.quant.emit.quantize_weight_per_channel` gives, as :func:`~edgefusion.quant.emit.emit_qdq`
    takes them) and a summary for the manifest. The Hessians are collected and used pass by pass, at most
    ``HESSIAN_PASS_BYTES`` at a time; each pass runs the same samples, spread evenly over ``feeds`` (at most
    ``HESSIAN_SAMPLES``), and passes run while the float graph runs plus the Hessian Gemms stay within
    ``HESSIAN_MACS`` (at least one pass of one sample); targets of passes beyond keep round to nearest."""
    from edgefusion.graph.op_graph import build_op_graph
    from edgefusion.graph.shapes import tensor_shapes
    from edgefusion.quant.emit import quantize_weight_per_channel
    from edgefusion.quant.gptq import gptq_round

    model_path = Path(model_path)
    model = onnx.load(str(model_path), load_external_data=False)
    targets = gptq_targets(model, plan)
    none = {"method": "gptq", "layers": 0, "of": len(targets), "samples": 0, "passes": 0}
    if not targets or not feeds:
        return {}, none
    shared: dict[tuple, list[Target]] = {}
    for t in targets:
        shared.setdefault(t.key, []).append(t)
    passes = _passes(shared)
    if not passes:
        return {}, none
    shapes = tensor_shapes(model)
    graph_macs = sum(op.macs for op in build_op_graph(model, model_path.parent.name).ops)
    pass_macs = [graph_macs + sum(_rows_per_sample(shapes, g[0]) * g[0].features ** 2
                                  for g in {t.key: [t] for t in chunk}.values()) for chunk in passes]
    n = max(1, min(len(feeds), HESSIAN_SAMPLES, int(HESSIAN_MACS // max(sum(pass_macs), 1))))
    kept, spent = 0, 0.0
    for macs in pass_macs:  # with fewer samples than a full run needs, as many passes as the budget pays for
        if kept and spent + n * macs > HESSIAN_MACS:
            break
        spent += n * macs
        kept += 1
    initializers = {t.name: t for t in model.graph.initializer}
    dims = {name: list(t.dims) for name, t in initializers.items()}
    del shapes
    pick = np.unique(np.linspace(0, len(feeds) - 1, n).round().astype(int))
    samples = [feeds[i] for i in pick]
    rounded: dict[str, np.ndarray] = {}
    for chunk in passes[:kept]:
        channels = {t.weight: dims[t.weight][1] for t in chunk if t.patches is not None}
        hessians = collect_input_hessians(model_path, chunk, channels, samples, progress)
        for t in chunk:
            w = numpy_helper.to_array(initializers[t.weight], base_dir=str(model_path.parent)).astype(np.float32)
            _, scale = quantize_weight_per_channel(w, plan.int8_weights[t.weight])
            flat = w.reshape(w.shape[0], -1) if w.ndim > 2 else w
            rounded[t.weight] = gptq_round(flat, scale, hessians[t.key], t.transposed).reshape(w.shape)
        del hessians
        release_freed_memory()
    return rounded, {"method": "gptq", "layers": len(rounded), "of": len(targets), "samples": len(samples),
                     "passes": kept}
