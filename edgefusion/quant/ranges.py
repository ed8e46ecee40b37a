"""Streaming activation-range collection.

onnxruntime's calibrators add every intermediate tensor as a graph output and keep the results, which for a
Stable Diffusion UNet means gigabytes per sample. Here the float graph is augmented with ReduceMin/ReduceMax on just
the tensors the plan quantizes, so each sample returns two scalars per tensor and the running min/max is updated as
samples stream through one session. Memory is one inference, whatever the number of samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
from onnx import helper

from edgefusion.errors import EdgeFusionError
from edgefusion.runtime.session import open_session, run_session


def collect_ranges(model_path: Path, tensors: list[str], feeds: Iterable[dict[str, np.ndarray]],
                   progress: bool = False, desc: str = "ranges") -> dict[str, tuple[float, float]]:
    """Min and max of each named tensor over all feeds (a running reduction; one sample in memory at a time)."""
    from tqdm.auto import tqdm

    model_path = Path(model_path)
    model = onnx.load(str(model_path), load_external_data=False)
    # Each reduction is placed right after the node producing its tensor: onnxruntime executes in node order, so
    # reductions appended at the end would keep every intermediate tensor alive until then (gigabytes on a UNet).
    reducers: dict[str, list[onnx.NodeProto]] = {}
    outs = []
    for i, t in enumerate(tensors):
        for op in ("ReduceMin", "ReduceMax"):
            name = f"__range{i}_{op}"
            reducers.setdefault(t, []).append(helper.make_node(op, [t], [name], keepdims=0, name=name))
            model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, []))
            outs.append(name)
    ordered = [r for i in model.graph.input for r in reducers.get(i.name, [])]
    for node in model.graph.node:
        ordered.append(node)
        ordered += [r for o in node.output for r in reducers.get(o, [])]
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    aug = model_path.with_name(model_path.stem + ".ranges.onnx")
    onnx.save(model, str(aug))
    lo = np.full(len(tensors), np.inf)
    hi = np.full(len(tensors), -np.inf)
    try:
        sess = open_session(aug)
        n_out = len(sess.get_outputs()) - len(outs)
        for feed in tqdm(feeds, desc=desc, disable=not progress, leave=False):
            res = run_session(sess, feed)[n_out:]
            vals = np.array([float(r) for r in res]).reshape(-1, 2)
            lo = np.minimum(lo, vals[:, 0])
            hi = np.maximum(hi, vals[:, 1])
        del sess
    finally:
        aug.unlink(missing_ok=True)
    bad = [t for t, a, b in zip(tensors, lo, hi) if not (np.isfinite(a) and np.isfinite(b))]
    if bad:
        raise EdgeFusionError(f"calibration activations of '{bad[0]}' are NaN/inf ({len(bad)} tensors affected)",
                              "the float graph overflows on the calibration inputs: check the model weights")
    return {t: (float(a), float(b)) for t, a, b in zip(tensors, lo, hi)}
