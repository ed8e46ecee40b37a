"""Write the QDQ / fp16-simulated graph for a :class:`QuantPlan` (weights processed one tensor at a time).

* Activation at 8/16 bits: uint8/uint16 asymmetric, scale and zero point from the collected min/max with
  onnxruntime's ``compute_scale_zp``; the producer's output is renamed and ``QuantizeLinear -> DequantizeLinear``
  re-creates the original name, so every consumer and graph output sees the quantized value.
* int8 weights: symmetric per output channel (zero point 0), stored as int8 + ``DequantizeLinear(axis)``.
* fp16: weights stored as float16 + ``Cast``; activations rounded by ``Cast(fp16) -> Cast(fp32)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.external_data_helper import load_external_data_for_tensor

from edgefusion.quant.plan import QuantPlan

_ACT_TYPES = {8: (onnx.TensorProto.UINT8, np.uint8), 16: (onnx.TensorProto.UINT16, np.uint16)}
EXTERNAL_DATA_THRESHOLD = 1 << 30  # graphs above 1 GiB of weights get a side file (protobuf caps at 2 GiB)


def activation_qparams(rmin: float, rmax: float, bits: int) -> tuple[np.float32, np.ndarray]:
    """Scale and zero point of an asymmetric unsigned ``bits``-bit activation (onnxruntime's formula)."""
    from onnxruntime.quantization.quant_utils import compute_scale_zp

    np_type = _ACT_TYPES[bits][1]
    info = np.iinfo(np_type)
    zp, scale = compute_scale_zp(np.array(rmin, np.float32), np.array(rmax, np.float32),
                                 np.array(info.min, np_type), np.array(info.max, np_type))
    return np.float32(scale), np.array(zp, dtype=np_type)


def quantize_weight_per_channel(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """int8 symmetric per-channel quantization: returns (int8 values, float32 scale per channel)."""
    axes = tuple(i for i in range(w.ndim) if i != axis)
    absmax = np.abs(w).max(axis=axes) if axes else np.abs(w)
    scale = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def _array(t: onnx.TensorProto, base_dir: Path) -> np.ndarray:
    if t.data_location == onnx.TensorProto.EXTERNAL:
        t2 = onnx.TensorProto()
        t2.CopyFrom(t)
        load_external_data_for_tensor(t2, str(base_dir))
        t2.data_location = onnx.TensorProto.DEFAULT
        del t2.external_data[:]
        return numpy_helper.to_array(t2)
    return numpy_helper.to_array(t)


def emit_qdq(float_path: Path, out_path: Path, plan: QuantPlan, ranges: dict[str, tuple[float, float]]) -> Path:
    """Read the float graph at ``float_path``, apply ``plan`` and save to ``out_path``; returns ``out_path``."""
    float_path, out_path = Path(float_path), Path(out_path)
    model = onnx.load(str(float_path), load_external_data=False)
    g = model.graph
    base = float_path.parent
    producer = {o: n for n in g.node for o in n.output}
    graph_inputs = {i.name for i in g.input}
    head: list[onnx.NodeProto] = []  # weight decoders go first
    new_inits: list[onnx.TensorProto] = []
    total_bytes = 0

    # -- weights
    kept = []
    for t in g.initializer:
        if t.name in plan.int8_weights:
            axis = plan.int8_weights[t.name]
            q, scale = quantize_weight_per_channel(_array(t, base).astype(np.float32), axis)
            new_inits += [numpy_helper.from_array(q, t.name + "__q"),
                          numpy_helper.from_array(scale, t.name + "__scale"),
                          numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), t.name + "__zp")]
            head.append(helper.make_node("DequantizeLinear", [t.name + "__q", t.name + "__scale", t.name + "__zp"],
                                         [t.name], axis=axis, name=t.name + "__dq"))
            total_bytes += q.nbytes
        elif t.name in plan.fp16_weights:
            with np.errstate(over="ignore"):  # beyond fp16 range becomes +-inf, as on the device
                h = _array(t, base).astype(np.float16)
            new_inits.append(numpy_helper.from_array(h, t.name + "__fp16"))
            head.append(helper.make_node("Cast", [t.name + "__fp16"], [t.name], to=onnx.TensorProto.FLOAT,
                                         name=t.name + "__cast"))
            total_bytes += h.nbytes
        else:
            arr = _array(t, base)
            kept.append(numpy_helper.from_array(arr, t.name))
            total_bytes += arr.nbytes
    del g.initializer[:]
    g.initializer.extend(kept + new_inits)

    # -- activations
    tail: list[onnx.NodeProto] = []
    input_renames: dict[str, str] = {}

    def reroute(tensor: str) -> tuple[str, str]:
        """Return (source name, final name): the producer now writes ``source``; ``final`` keeps the old name."""
        if tensor in graph_inputs:
            input_renames[tensor] = tensor + "__in"
            return tensor, tensor + "__in"
        node = producer[tensor]
        node.output[list(node.output).index(tensor)] = tensor + "__f"
        return tensor + "__f", tensor

    for tensor, bits in plan.act_bits.items():
        scale, zp = activation_qparams(*ranges[tensor], bits)
        src, dst = reroute(tensor)
        g.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), tensor + "__ascale"),
                              numpy_helper.from_array(zp, tensor + "__azp")])
        tail += [helper.make_node("QuantizeLinear", [src, tensor + "__ascale", tensor + "__azp"], [tensor + "__aq"],
                                  name=tensor + "__Q"),
                 helper.make_node("DequantizeLinear", [tensor + "__aq", tensor + "__ascale", tensor + "__azp"], [dst],
                                  name=tensor + "__DQ")]
    for tensor in plan.fp16_tensors:
        src, dst = reroute(tensor)
        tail += [helper.make_node("Cast", [src], [tensor + "__h"], to=onnx.TensorProto.FLOAT16, name=tensor + "__toh"),
                 helper.make_node("Cast", [tensor + "__h"], [dst], to=onnx.TensorProto.FLOAT, name=tensor + "__tof")]
    if input_renames:
        for node in g.node:
            for i, name in enumerate(node.input):
                if name in input_renames:
                    node.input[i] = input_renames[name]
    nodes = head + list(g.node) + tail
    del g.node[:]
    g.node.extend(_toposort(nodes, graph_inputs | {t.name for t in g.initializer}))
    del g.value_info[:]  # stale after renaming; onnxruntime re-infers
    out_path.parent.mkdir(parents=True, exist_ok=True)
    data_name = out_path.name + ".data"
    (out_path.parent / data_name).unlink(missing_ok=True)
    if total_bytes > EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(model, str(out_path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
    else:
        onnx.save_model(model, str(out_path))
    return out_path


def _toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Kahn's algorithm, stable with respect to the given order."""
    have = set(available) | {""}
    waiting: dict[str, list[int]] = {}
    missing = []
    for i, n in enumerate(nodes):
        need = {x for x in n.input if x not in have}
        missing.append(need)
    produced_by = {o: i for i, n in enumerate(nodes) for o in n.output}
    for i, need in enumerate(missing):
        for x in list(need):
            if x not in produced_by:
                need.discard(x)  # graph-level name (e.g. optional); let the checker complain if really absent
            else:
                waiting.setdefault(x, []).append(i)
    import heapq
    ready = [i for i, need in enumerate(missing) if not need]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for o in nodes[i].output:
            for j in waiting.pop(o, []):
                missing[j].discard(o)
                if not missing[j]:
                    heapq.heappush(ready, j)
    if len(order) != len(nodes):
        raise RuntimeError("QDQ emission produced a cyclic graph (internal error)")
    return order
