"""Write the QDQ / fp16-simulated graph for a :class:`QuantPlan` (weights processed one tensor at a time).

* Activation at 8/16 bits: uint8/uint16 asymmetric, scale and zero point from the chosen range with onnxruntime's
  ``compute_scale_zp``; ``QuantizeLinear -> DequantizeLinear`` after the producer, every consumer reading the
  dequantized tensor. The second input of a node in ``plan.signed_16bit_inputs`` is requantized to int16,
  symmetric (scale = max(|min|, |max|) / 32767 over its source's range, zero point 0), right before the node.
* int8 weights: symmetric per output channel (zero point 0), stored as int8 + ``DequantizeLinear(axis)``; per
  tensor (one scale, no axis) where the plan says so; ``axis=-1`` on a MatMul weight read by a 16-bit tensor
  (:func:`wide_input_matmul_weights`).
* int32 biases of integer layers: scale = input scale x weight scale (per channel), zero point 0, so onnxruntime
  fuses ``DQ -> Conv/Gemm -> Q`` into integer kernels and deployment compilers find the bias they expect.
* uint8 constants (a layer norm's scale): asymmetric per tensor over ``[min(0, w), max(0, w)]``, as an
  activation of that width would be.
* fp16: weights stored as float16 + ``Cast``; activations rounded by ``Cast(fp16) -> Cast(fp32)``.
* A ``Split`` of a quantized tensor gets a ``QuantizeLinear -> DequantizeLinear`` on each output with the input's
  scale and zero point: exact (the values are already on that grid), and what the QNN execution provider needs to
  run the split as an integer op (it propagates quantization through reshapes and transposes, not through splits).

Names follow onnxruntime's quantizer, so its tools (``onnxruntime.quantization.qdq_loss_debug``) pair the QDQ graph
with the float one: ``W_quantized`` / ``W_scale`` / ``W_zero_point`` feed ``W_DequantizeLinear`` whose output keeps
the name ``W``; an activation ``X`` is quantized into ``X_QuantizeLinear_Output`` and read back as
``X_DequantizeLinear_Output`` (a graph output keeps its name: the producer then writes ``X_QuantizeLinear_Input``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.external_data_helper import load_external_data_for_tensor

from edgefusion.quant.plan import QuantPlan, quantized_source

_ACT_TYPES = {8: (onnx.TensorProto.UINT8, np.uint8), 16: (onnx.TensorProto.UINT16, np.uint16)}
EXTERNAL_DATA_THRESHOLD = 1 << 30  # graphs above 1 GiB of weights get a side file (protobuf caps at 2 GiB)
INT32_LIMIT = 2 ** 31 - 1


def activation_qparams(rmin: float, rmax: float, bits: int) -> tuple[np.float32, np.ndarray]:
    """Scale and zero point of an asymmetric unsigned ``bits``-bit activation (onnxruntime's formula)."""
    from onnxruntime.quantization.quant_utils import compute_scale_zp

    np_type = _ACT_TYPES[bits][1]
    info = np.iinfo(np_type)
    zp, scale = compute_scale_zp(np.array(rmin, np.float32), np.array(rmax, np.float32),
                                 np.array(info.min, np_type), np.array(info.max, np_type))
    return np.float32(scale), np.array(zp, dtype=np_type)


def signed_16bit_qparams(rmin: float, rmax: float) -> tuple[np.float32, np.ndarray]:
    """Scale and zero point (0) of a symmetric int16 activation covering ``[rmin, rmax]``."""
    absmax = max(abs(float(rmin)), abs(float(rmax)))
    return np.float32(absmax / 32767.0 if absmax > 0 else 1.0), np.array(0, dtype=np.int16)


def quantize_weight_per_channel(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """int8 symmetric per-channel quantization: returns (int8 values, float32 scale per channel)."""
    axes = tuple(i for i in range(w.ndim) if i != axis)
    absmax = np.abs(w).max(axis=axes) if axes else np.abs(w)
    scale = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def quantize_weight_per_tensor(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 symmetric per-tensor quantization: returns (int8 values, float32 scalar scale)."""
    absmax = float(np.abs(w).max()) if w.size else 0.0
    scale = np.array(absmax / 127.0 if absmax > 0 else 1.0, dtype=np.float32)
    return np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale


def quantize_constant(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.float32, np.ndarray]:
    """Asymmetric per-tensor ``bits``-bit quantization of a constant: (uint values, scale, zero point)."""
    scale, zp = activation_qparams(min(float(w.min()), 0.0), max(float(w.max()), 0.0), bits)
    info = np.iinfo(zp.dtype)
    q = np.clip(np.rint(w.astype(np.float64) / np.float64(scale)) + int(zp), info.min, info.max).astype(zp.dtype)
    return q, scale, zp


def quantize_bias(b: np.ndarray, input_scale: np.float32, weight_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int32 bias with scale ``input_scale x weight_scale`` (per channel, zero point 0): (int32 values, scale)."""
    scale = (np.float32(input_scale) * weight_scale.astype(np.float32)).astype(np.float32)
    q = np.clip(np.rint(b.astype(np.float64) / scale.astype(np.float64)), -INT32_LIMIT, INT32_LIMIT)
    return q.astype(np.int32), scale


def _array(t: onnx.TensorProto, base_dir: Path) -> np.ndarray:
    if t.data_location == onnx.TensorProto.EXTERNAL:
        t2 = onnx.TensorProto()
        t2.CopyFrom(t)
        load_external_data_for_tensor(t2, str(base_dir))
        t2.data_location = onnx.TensorProto.DEFAULT
        del t2.external_data[:]
        return numpy_helper.to_array(t2)
    return numpy_helper.to_array(t)


def _dq_node(name: str, scale: np.ndarray, zp: np.ndarray, q: np.ndarray, axis: int | None) -> tuple[list, onnx.NodeProto]:
    """Initializers ``name_quantized/_scale/_zero_point`` and the ``DequantizeLinear`` writing ``name``."""
    inits = [numpy_helper.from_array(q, name + "_quantized"), numpy_helper.from_array(scale, name + "_scale"),
             numpy_helper.from_array(zp, name + "_zero_point")]
    kw = {"axis": axis} if axis is not None else {}
    node = helper.make_node("DequantizeLinear", [name + "_quantized", name + "_scale", name + "_zero_point"], [name],
                            name=name + "_DequantizeLinear", **kw)
    return inits, node


def _qdq_pair(src: str, qparams: list[str], prefix: str, dst: str) -> list[onnx.NodeProto]:
    """``QuantizeLinear(src) -> DequantizeLinear -> dst`` with the named scale and zero point, the nodes and their
    integer tensor named after ``prefix`` (``prefix_QuantizeLinear``, ``prefix_QuantizeLinear_Output`` ...)."""
    q = prefix + "_QuantizeLinear_Output"
    return [helper.make_node("QuantizeLinear", [src, *qparams], [q], name=prefix + "_QuantizeLinear"),
            helper.make_node("DequantizeLinear", [q, *qparams], [dst], name=prefix + "_DequantizeLinear")]


def wide_input_matmul_weights(graph: onnx.GraphProto, plan: QuantPlan,
                              producer: dict[str, onnx.NodeProto] | None = None) -> set[str]:
    """Per-channel int8 weights (channel axis 1) of the MatMuls and Gemms that read a 16-bit tensor.

    No integer kernel reads them, and onnxruntime would otherwise turn ``DQ(weight) -> MatMul`` into MatMulNBits,
    which by default computes with the *input* quantized to 8 bits (a 16-bit layer at 8-bit precision, under the
    default session options optimum and diffusers open). Their ``DequantizeLinear`` is written with ``axis=-1``, the
    same axis of a 2-D weight, which that fusion does not take."""
    producer = producer if producer is not None else {o: n for n in graph.node for o in n.output}
    quantized = frozenset(plan.act_bits)
    return {node.input[1] for node in graph.node
            if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and plan.int8_weights.get(node.input[1]) == 1
            and plan.act_bits.get(quantized_source(node.input[0], producer, quantized)) == 16}


def emit_qdq(float_path: Path, out_path: Path, plan: QuantPlan, ranges: dict[str, tuple[float, float]] | None,
             qparams_as_inputs: bool = False,
             rounded: Mapping[str, np.ndarray] | None = None) -> Path:
    """Read the float graph at ``float_path``, apply ``plan`` and save to ``out_path``; returns ``out_path``.

    ``qparams_as_inputs``: a *probe* graph for range search, whose activation scales and zero points are graph
    inputs (fed by :func:`qparam_feeds`, so one session evaluates any ranges) and whose biases stay float.
    ``rounded``: int8 values of per-channel weights rounded otherwise than to nearest at the same scales (GPTQ,
    ``edgefusion.quant.weight_rounding``), by weight name."""
    float_path, out_path = Path(float_path), Path(out_path)
    model = onnx.load(str(float_path), load_external_data=False)
    g = model.graph
    base = float_path.parent
    producer = {o: n for n in g.node for o in n.output}
    graph_outputs = {o.name for o in g.output}
    head: list[onnx.NodeProto] = []  # weight decoders go first
    new_inits: list[onnx.TensorProto] = []
    total_bytes = 0
    act_q = {} if qparams_as_inputs else {t: activation_qparams(*ranges[t], b) for t, b in plan.act_bits.items()}
    biased = {} if qparams_as_inputs else plan.int32_biases

    # -- weights (int8 first: their scales set the biases' scales)
    kept, biases, w_scale = [], {}, {}
    wide = wide_input_matmul_weights(g, plan, producer)
    for t in g.initializer:
        if t.name in plan.int8_weights:
            axis = plan.int8_weights[t.name]
            w = _array(t, base).astype(np.float32)
            q, scale = quantize_weight_per_tensor(w) if axis is None else quantize_weight_per_channel(w, axis)
            if rounded and t.name in rounded and axis is not None:
                if rounded[t.name].shape != q.shape or rounded[t.name].dtype != q.dtype:
                    raise ValueError(f"rounded weight {t.name}: {rounded[t.name].shape} is not {q.shape}")
                q = rounded[t.name]
            inits, node = _dq_node(t.name, scale, np.zeros_like(scale, dtype=np.int8), q,
                                   -1 if t.name in wide else axis)
            new_inits += inits
            head.append(node)
            w_scale[t.name] = scale
            total_bytes += q.nbytes
        elif t.name in plan.const_bits:
            q, scale, zp = quantize_constant(_array(t, base).astype(np.float32), plan.const_bits[t.name])
            inits, node = _dq_node(t.name, np.array(scale, np.float32), zp, q, None)
            new_inits += inits
            head.append(node)
            w_scale[t.name] = np.array(scale, np.float32)
            total_bytes += q.nbytes
        elif t.name in biased:
            biases[t.name] = t
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
    for name, t in biases.items():
        source, weight = plan.int32_biases[name]
        b = _array(t, base)
        q, scale = quantize_bias(b, act_q[source][0], w_scale[weight])  # per tensor with a per-tensor weight
        inits, node = _dq_node(name, scale, np.zeros(scale.shape, np.int32), q, 0 if scale.ndim else None)
        new_inits += inits
        head.append(node)
        total_bytes += q.nbytes
    del g.initializer[:]
    g.initializer.extend(kept + new_inits)

    # -- activations
    tail: list[onnx.NodeProto] = []
    rewire: dict[str, str] = {}  # tensor -> the name its consumers read now

    def reroute(tensor: str, suffix: str) -> tuple[str, str]:
        """(what the quantizer reads, what it writes): consumers move to ``tensor + suffix``; a graph output keeps
        its name and the producer writes ``tensor_QuantizeLinear_Input`` instead."""
        if tensor in graph_outputs:
            node = producer[tensor]
            node.output[list(node.output).index(tensor)] = tensor + "_QuantizeLinear_Input"
            rewire[tensor] = tensor  # other readers of the output read the quantized value under its own name
            return tensor + "_QuantizeLinear_Input", tensor
        rewire[tensor] = tensor + suffix
        return tensor, tensor + suffix

    for tensor, bits in plan.act_bits.items():
        src, dst = reroute(tensor, "_DequantizeLinear_Output")
        if qparams_as_inputs:
            g.input.extend([helper.make_tensor_value_info(tensor + "_scale", onnx.TensorProto.FLOAT, []),
                            helper.make_tensor_value_info(tensor + "_zero_point", _ACT_TYPES[bits][0], [])])
        else:
            scale, zp = act_q[tensor]
            g.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), tensor + "_scale"),
                                  numpy_helper.from_array(zp, tensor + "_zero_point")])
        tail += _qdq_pair(src, [tensor + "_scale", tensor + "_zero_point"], tensor, dst)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for x in node.input:
            readers.setdefault(x, []).append(node)
    for tensor in plan.act_bits:  # splits of quantized tensors: the same quantizer on each part (exact)
        for split in (n for n in readers.get(tensor, []) if n.op_type == "Split" and n.input[0] == tensor):
            for part in split.output:
                if not part or part in graph_outputs or part in rewire:
                    continue
                rewire[part] = part + "_DequantizeLinear_Output"
                if qparams_as_inputs:  # a probe graph: the part reads its source's scale and zero point inputs
                    qp = [tensor + "_scale", tensor + "_zero_point"]
                else:  # its own copies, so every quantizer owns its parameters (as onnxruntime's do)
                    qp = [part + "_scale", part + "_zero_point"]
                    g.initializer.extend([numpy_helper.from_array(np.array(act_q[tensor][0], np.float32), qp[0]),
                                          numpy_helper.from_array(act_q[tensor][1], qp[1])])
                tail += _qdq_pair(part, qp, part, rewire[part])
    for tensor in plan.fp16_tensors:
        src, dst = reroute(tensor, "_fp16_Output")
        tail += [helper.make_node("Cast", [src], [tensor + "__h"], to=onnx.TensorProto.FLOAT16, name=tensor + "__toh"),
                 helper.make_node("Cast", [tensor + "__h"], [dst], to=onnx.TensorProto.FLOAT, name=tensor + "__tof")]
    for node in g.node:  # the quantizers (in ``tail``) keep reading their source
        for i, name in enumerate(node.input):
            if name in rewire:
                node.input[i] = rewire[name]
    by_name = {n.name: n for n in g.node}
    for name, source in plan.signed_16bit_inputs.items():  # int16 second inputs, requantized right before the node
        node, p = by_name[name], name + "_int16"
        if qparams_as_inputs:
            g.input.append(helper.make_tensor_value_info(p + "_scale", onnx.TensorProto.FLOAT, []))
        else:
            g.initializer.append(numpy_helper.from_array(
                np.array(signed_16bit_qparams(*ranges[source])[0], np.float32), p + "_scale"))
        g.initializer.append(numpy_helper.from_array(np.array(0, np.int16), p + "_zero_point"))
        qp = [p + "_scale", p + "_zero_point"]
        tail += _qdq_pair(node.input[1], qp, p, p + "_DequantizeLinear_Output")
        node.input[1] = p + "_DequantizeLinear_Output"
    nodes = head + list(g.node) + tail
    del g.node[:]
    g.node.extend(_toposort(nodes, {i.name for i in g.input} | {t.name for t in g.initializer}))
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


def qparam_feeds(plan: QuantPlan, ranges: dict[str, tuple[float, float]]) -> dict[str, np.ndarray]:
    """The scale and zero-point inputs of a probe graph (``emit_qdq(..., qparams_as_inputs=True)``) for ``ranges``."""
    out = {}
    for t, bits in plan.act_bits.items():
        scale, zp = activation_qparams(*ranges[t], bits)
        out[t + "_scale"], out[t + "_zero_point"] = np.array(scale, np.float32), zp
    for node, source in plan.signed_16bit_inputs.items():
        out[node + "_int16_scale"] = np.array(signed_16bit_qparams(*ranges[source])[0], np.float32)
    return out


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
