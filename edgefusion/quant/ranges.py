"""Streaming activation statistics for range estimation.

onnxruntime's calibrators add every intermediate tensor as a graph output and keep the results, which for a
Stable Diffusion UNet means gigabytes per sample. Here the float graph is augmented with small reductions placed
right after the tensors the plan quantizes, so each sample returns a few scalars per tensor while samples stream
through one session. Memory is one inference, whatever the number of samples.

* :func:`collect_range_stats`: per-sample minimum and maximum of each tensor (``ReduceMin``/``ReduceMax``).
* :func:`collect_clip_errors`: per-sample squared error of fake-quantizing each tensor with each of a few candidate
  ranges (``QuantizeLinear -> DequantizeLinear -> Sub -> ReduceSumSquare``), summed per candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgefusion.errors import EdgeFusionError
from edgefusion.runtime.session import open_session, release_freed_memory, run_session


@dataclass
class RangeStats:
    """Per-sample extremes of each tensor: ``lo[i, j]`` / ``hi[i, j]`` for sample ``i`` and ``tensors[j]``;
    ``groups[i]`` says which prompt sample ``i`` came from (samples of one prompt are not independent)."""

    tensors: list[str]
    lo: np.ndarray
    hi: np.ndarray
    groups: np.ndarray

    def minmax(self) -> dict[str, tuple[float, float]]:
        """Minimum and maximum over all samples."""
        return {t: (float(a), float(b)) for t, a, b in zip(self.tensors, self.lo.min(0), self.hi.max(0))}


def augmented_graph(model_path: Path, reducers: dict[str, list[onnx.NodeProto]],
                    extra_inits: list[onnx.TensorProto], outputs: list[str], suffix: str) -> Path:
    """Save a copy of the graph with ``reducers`` placed right after each tensor's producer and ``outputs`` added."""
    model = onnx.load(str(model_path), load_external_data=False)
    # Each reduction sits right after the node producing its tensor: onnxruntime executes in node order, so
    # reductions appended at the end would keep every intermediate tensor alive until then (gigabytes on a UNet).
    ordered = [r for i in model.graph.input for r in reducers.get(i.name, [])]
    for node in model.graph.node:
        ordered.append(node)
        ordered += [r for o in node.output for r in reducers.get(o, [])]
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    model.graph.initializer.extend(extra_inits)
    for name in outputs:
        model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, []))
    aug = model_path.with_name(model_path.stem + suffix)
    onnx.save(model, str(aug))
    return aug


def _run_scalars(aug: Path, n_out: int, feeds: Iterable[dict], progress: bool, desc: str) -> np.ndarray:
    """Run every feed and return the added scalar outputs, one row per feed."""
    from tqdm.auto import tqdm

    rows = []
    try:
        sess = open_session(aug)
        first = len(sess.get_outputs()) - n_out
        for feed in tqdm(feeds, desc=desc, disable=not progress, leave=False):
            rows.append([float(r) for r in run_session(sess, feed)[first:]])
        del sess
    finally:
        aug.unlink(missing_ok=True)
        release_freed_memory()
    return np.array(rows, dtype=np.float64).reshape(len(rows), n_out)


def collect_range_stats(model_path: Path, tensors: list[str], feeds: Sequence[dict[str, np.ndarray]],
                        groups: Sequence[int] | None = None, progress: bool = False,
                        desc: str = "ranges") -> RangeStats:
    """Per-sample min and max of each named tensor (one sample in memory at a time)."""
    model_path = Path(model_path)
    reducers: dict[str, list[onnx.NodeProto]] = {}
    outs = []
    for i, t in enumerate(tensors):
        for op in ("ReduceMin", "ReduceMax"):
            name = f"__range{i}_{op}"
            reducers.setdefault(t, []).append(helper.make_node(op, [t], [name], keepdims=0, name=name))
            outs.append(name)
    aug = augmented_graph(model_path, reducers, [], outs, ".ranges.onnx")
    vals = _run_scalars(aug, len(outs), feeds, progress, desc).reshape(-1, len(tensors), 2)
    bad = [t for j, t in enumerate(tensors) if not np.isfinite(vals[:, j]).all()]
    if bad:
        raise EdgeFusionError(f"calibration activations of '{bad[0]}' are NaN/inf ({len(bad)} tensors affected)",
                              "the float graph overflows on the calibration inputs: check the model weights")
    g = np.asarray(groups if groups is not None else range(len(vals)), dtype=np.int64)
    return RangeStats(list(tensors), vals[:, :, 0], vals[:, :, 1], g)


def collect_ranges(model_path: Path, tensors: list[str], feeds: Iterable[dict[str, np.ndarray]],
                   progress: bool = False, desc: str = "ranges") -> dict[str, tuple[float, float]]:
    """Min and max of each named tensor over all feeds."""
    return collect_range_stats(model_path, tensors, list(feeds), progress=progress, desc=desc).minmax()


def collect_clip_errors(model_path: Path, candidates: dict[str, list[tuple[float, float, int]]],
                        feeds: Iterable[dict[str, np.ndarray]], progress: bool = False,
                        desc: str = "range search") -> dict[str, np.ndarray]:
    """For each tensor and each candidate ``(lo, hi, bits)``: the squared error of fake-quantizing the tensor with
    that range, summed over ``feeds`` (the exporter's QDQ math, run by onnxruntime inside the float graph). The
    last entry of each returned array is the tensor's own energy ``sum(x^2)``, to normalise errors with."""
    from edgefusion.quant.emit import activation_qparams

    model_path = Path(model_path)
    reducers: dict[str, list[onnx.NodeProto]] = {}
    inits, outs, where = [], [], []
    for i, (t, cands) in enumerate(candidates.items()):
        for k, (lo, hi, bits) in enumerate(cands):
            scale, zp = activation_qparams(lo, hi, bits)
            p = f"__clip{i}_{k}"
            inits += [numpy_helper.from_array(np.array(scale, np.float32), p + "_s"),
                      numpy_helper.from_array(zp, p + "_z")]
            reducers.setdefault(t, []).extend([
                helper.make_node("QuantizeLinear", [t, p + "_s", p + "_z"], [p + "_q"], name=p + "_Q"),
                helper.make_node("DequantizeLinear", [p + "_q", p + "_s", p + "_z"], [p + "_d"], name=p + "_DQ"),
                helper.make_node("Sub", [p + "_d", t], [p + "_e"], name=p + "_Sub"),
                helper.make_node("ReduceSumSquare", [p + "_e"], [p], keepdims=0, name=p + "_SSE")])
            outs.append(p)
            where.append((t, k))
        p = f"__clip{i}_energy"
        reducers.setdefault(t, []).append(helper.make_node("ReduceSumSquare", [t], [p], keepdims=0, name=p))
        outs.append(p)
        where.append((t, len(cands)))
    aug = augmented_graph(model_path, reducers, inits, outs, ".clip.onnx")
    total = _run_scalars(aug, len(outs), feeds, progress, desc).sum(0)
    out = {t: np.zeros(len(c) + 1) for t, c in candidates.items()}
    for (t, k), v in zip(where, total):
        out[t][k] = v
    return out
