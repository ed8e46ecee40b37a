"""Output-aware rounding of int8 weights (GPTQ, Frantar et al. 2022) for linear layers that read 16-bit tensors.

Round to nearest minimises each weight's own error; what matters is the layer's *output* error on the inputs it
sees. GPTQ rounds one input row of the weight at a time and spreads the rounding error over the rows not yet
rounded, weighted by the inverse of the inputs' second moment ``H = X^T X`` (the Hessian of the output error), so
correlated input channels compensate each other. Scales stay those of round-to-nearest (symmetric per channel), so
the graph, its biases and every client are unchanged: only the int8 values move.

Where it is applied: MatMul and Gemm layers whose int8 per-channel weights read a 16-bit activation. There the
weights are the error that is left (``w8a16`` text encoder on held-out prompts, ``crossval`` ranges: embedded model
48.34 -> 52.05 dB, ``tiny`` 37.87 -> 42.68 dB; README "Fidelity"); behind an 8-bit input the input's own rounding
dominates and GPTQ moved nothing (W8A8 text encoder 33.44 -> 33.46 dB, ``tiny`` 27.80 -> 27.68 dB), so layers
behind 8-bit inputs keep round to nearest.

``H`` is streamed: one extra pass over (a subset of) the calibration samples, each layer input's ``X^T X`` computed
inside the float graph by one Gemm placed right after its producer, so memory is the Hessians plus one inference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgefusion.quant.graph_index import GraphIndex
from edgefusion.quant.plan import QuantPlan, quantized_source
from edgefusion.quant.ranges import augmented_graph
from edgefusion.runtime.session import open_session, release_freed_memory, run_session

WEIGHT_ROUNDING = ("gptq", "nearest")
HESSIAN_BYTES = 256 * 2 ** 20  # float64 Hessians kept at once; layers beyond keep round to nearest
HESSIAN_MACS = 2e12  # compute budget of the Hessian pass, in multiply-accumulates of the float graph


def gptq_targets(model: onnx.ModelProto, plan: QuantPlan) -> dict[str, tuple[str, bool]]:
    """Int8 per-channel weights of MatMul/Gemm nodes whose activation input is 16-bit: weight -> (the node's
    activation input, whether the weight is stored ``[out, in]``)."""
    idx = GraphIndex.build(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    stop = frozenset(plan.act_bits)
    out: dict[str, tuple[str, bool]] = {}
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        w = node.input[1]
        if plan.int8_weights.get(w) is None or len(idx.initializers[w].dims) != 2:
            continue  # not int8, or per tensor
        attrs = {a.name: a.i for a in node.attribute}
        if attrs.get("transA", 0):
            continue
        if plan.act_bits.get(quantized_source(node.input[0], producer, stop)) != 16:
            continue
        transposed = node.op_type == "Gemm" and bool(attrs.get("transB", 0))
        out[w] = (node.input[0], transposed)
    return out


def collect_input_hessians(model_path: Path, inputs: Mapping[str, int], feeds: Sequence[dict[str, np.ndarray]],
                           progress: bool = False) -> dict[str, np.ndarray]:
    """``sum X^T X`` (float64) of each named tensor, flattened to ``[-1, width]``, over ``feeds``."""
    from tqdm.auto import tqdm

    reducers: dict[str, list[onnx.NodeProto]] = {}
    inits, outs = [], []
    for i, (t, width) in enumerate(inputs.items()):
        p = f"__hessian{i}"
        inits.append(numpy_helper.from_array(np.array([-1, width], np.int64), p + "_shape"))
        reducers[t] = [helper.make_node("Reshape", [t, p + "_shape"], [p + "_x"], name=p + "_Reshape"),
                       helper.make_node("Gemm", [p + "_x", p + "_x"], [p], transA=1, name=p + "_Gemm")]
        outs.append(p)
    aug = augmented_graph(Path(model_path), reducers, inits, outs, ".hessians.onnx")
    total = {t: np.zeros((w, w), np.float64) for t, w in inputs.items()}
    try:
        sess = open_session(aug)
        first = len(sess.get_outputs()) - len(outs)
        for feed in tqdm(feeds, desc="weight rounding", disable=not progress, leave=False):
            for t, h in zip(inputs, run_session(sess, feed)[first:]):
                total[t] += h
        del sess
    finally:
        aug.unlink(missing_ok=True)
        release_freed_memory()
    return total


def weight_hessians(model_path: Path, plan: QuantPlan, feeds: Sequence[dict[str, np.ndarray]],
                    progress: bool = False) -> tuple[dict[str, tuple[np.ndarray, bool]], dict]:
    """The Hessian of each GPTQ target weight (``weight -> (H, transposed)``) and a summary for the manifest:
    targets in graph order while their Hessians fit ``HESSIAN_BYTES``, samples evenly spread within
    ``HESSIAN_MACS``."""
    from edgefusion.quant.range_methods import search_sample_limit

    model = onnx.load(str(model_path), load_external_data=False)
    targets = gptq_targets(model, plan)
    if not targets or not feeds:
        return {}, {"method": "gptq", "layers": 0, "of": len(targets), "samples": 0}
    dims = {i.name: list(i.dims) for i in model.graph.initializer}
    widths: dict[str, int] = {}
    kept: dict[str, tuple[str, bool]] = {}
    used = 0
    for w, (x, transposed) in targets.items():
        width = dims[w][1] if transposed else dims[w][0]
        cost = 0 if x in widths else width * width * 8
        if used + cost > HESSIAN_BYTES:
            continue
        used += cost
        widths[x] = width
        kept[w] = (x, transposed)
    del model
    n = search_sample_limit(model_path, 1, HESSIAN_MACS, most=len(feeds))
    pick = np.unique(np.linspace(0, len(feeds) - 1, n).round().astype(int))
    hessians = collect_input_hessians(model_path, widths, [feeds[i] for i in pick], progress)
    out = {w: (hessians[x], t) for w, (x, t) in kept.items()}
    return out, {"method": "gptq", "layers": len(out), "of": len(targets), "samples": int(len(pick))}
