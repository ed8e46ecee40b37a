"""Write the UNet's sinusoidal timestep embedding in a form that stays accurate in float16.

diffusers computes ``sin(x)`` and ``cos(x)`` of ``x = t * F`` (``t`` the timestep, up to ~1000; ``F`` the constant
frequencies, up to 1). An NPU computes float ops in float16, whose step at 500 is 0.25: ``x`` is already wrong by up
to a quarter of a radian before the sine, and the embedding reads about 25 dB against the float32 one (measured on
Qualcomm's emulated HTP, README "Qualcomm QNN"). This form never holds a large angle. With ``t = 32 a + b + d``
(``a``, ``b`` integers, ``0 <= b < 32``, ``0 <= d < 1``)::

    sin(x) = sin(P) cos(dF) + cos(P) sin(dF),   cos(x) = cos(P) cos(dF) - sin(P) sin(dF)
    sin(P) = SA[a] CB[b] + CA[a] SB[b],           cos(P) = CA[a] CB[b] - SA[a] SB[b]

where ``SA[a] = sin(32 a F)``, ``CA``, ``SB[b] = sin(b F)`` and ``CB`` are tables computed in float64 and gathered by
the integer parts, and ``dF < 1``. Every value is at most 1 in magnitude or an integer below 2048 (exact in float16),
so float16 only rounds each product once. Timesteps are clipped to [0, 2047] for the tables (Stable Diffusion's are
below 1000). In float32 the form agrees with ``sin(t * F)`` to about 1e-4 (the float32 product ``t * F`` itself is
rounded by up to 3e-5 at 1000), closer to the exact sine than the original.

Every new node carries the metadata of the ``Sin``/``Cos`` node it serves, so layer discovery keeps the layers'
names (the policies keep ``time_proj`` float); the angle's ``Mul`` goes when nothing else reads it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgefusion.graph.naming import unique_name

BLOCK = 32  # t = BLOCK * a + b
BLOCKS = 64  # a < BLOCKS: timesteps below 2048, the largest integers float16 holds exactly


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for t in model.graph.initializer:
        if t.name == name:
            if t.data_location == onnx.TensorProto.EXTERNAL or not (t.raw_data or t.float_data):
                return None  # a weight-free graph, or data outside: leave the graph as it is
            return numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(n.attribute[0].t)
    return None


def _sites(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, onnx.NodeProto, str, str, np.ndarray]]:
    """``(Sin, Cos, t, F's name, F)`` for each angle ``x = Mul(t, F)`` read by a Sin and a Cos, ``t`` an Unsqueeze output of
    shape [B, 1] and ``F`` a float constant of shape [1, H] (diffusers' ``get_timestep_embedding``)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for x in n.input:
            readers.setdefault(x, []).append(n)
    out = []
    for name, nodes in readers.items():
        sin = [n for n in nodes if n.op_type == "Sin"]
        cos = [n for n in nodes if n.op_type == "Cos"]
        mul = producer.get(name)
        if len(sin) != 1 or len(cos) != 1 or mul is None or mul.op_type != "Mul":
            continue
        for t, f in (mul.input, mul.input[::-1]):
            freqs = _constant(model, f)
            src = producer.get(t)
            if (freqs is not None and freqs.dtype == np.float32 and freqs.ndim == 2 and freqs.shape[0] == 1
                    and src is not None and src.op_type == "Unsqueeze"):
                out.append((sin[0], cos[0], t, f, freqs))
                break
    return out


def exact_timestep_sinusoids(model: onnx.ModelProto) -> int:
    """Rewrite every timestep sinusoid of ``model`` in place (module docstring); returns how many."""
    g = model.graph
    used = {n.name for n in g.node} | {o for n in g.node for o in n.output} | {t.name for t in g.initializer} | \
        {i.name for i in g.input}
    sites = _sites(model)
    for sin, cos, t, freqs_name, freqs in sites:
        f = freqs.astype(np.float64)[0]
        a = np.arange(BLOCKS, dtype=np.float64)[:, None] * BLOCK * f
        b = np.arange(BLOCK, dtype=np.float64)[:, None] * f
        base = sin.name
        tables = {}
        for role, value in (("sa", np.sin(a)), ("ca", np.cos(a)), ("sb", np.sin(b)), ("cb", np.cos(b))):
            tables[role] = unique_name(f"{base}__ts_{role}", used)
            g.initializer.append(numpy_helper.from_array(value.astype(np.float32), tables[role]))
        for role, value in (("zero", 0.0), ("top", BLOCK * BLOCKS - 1.0), ("block", float(BLOCK))):
            tables[role] = unique_name(f"{base}__ts_{role}", used)
            g.initializer.append(numpy_helper.from_array(np.array(value, np.float32), tables[role]))
        tables["flat"] = unique_name(f"{base}__ts_flat", used)
        g.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), tables["flat"]))

        new: list[onnx.NodeProto] = []

        def node(op: str, inputs: list[str], owner: onnx.NodeProto, output: str | None = None, **attrs) -> str:
            out = output or unique_name(f"{base}__ts_{op.lower()}", used)
            n = helper.make_node(op, inputs, [out], name=unique_name(f"{base}__ts_{op}", used), **attrs)
            n.metadata_props.extend(owner.metadata_props)
            new.append(n)
            return out

        whole = node("Floor", [t], sin)
        frac = node("Sub", [t, whole], sin)
        clipped = node("Clip", [whole, tables["zero"], tables["top"]], sin)
        hi = node("Floor", [node("Div", [clipped, tables["block"]], sin)], sin)
        lo = node("Sub", [clipped, node("Mul", [hi, tables["block"]], sin)], sin)
        idx_hi = node("Reshape", [node("Cast", [hi], sin, to=onnx.TensorProto.INT32), tables["flat"]], sin)
        idx_lo = node("Reshape", [node("Cast", [lo], sin, to=onnx.TensorProto.INT32), tables["flat"]], sin)
        sa = node("Gather", [tables["sa"], idx_hi], sin, axis=0)
        ca = node("Gather", [tables["ca"], idx_hi], sin, axis=0)
        sb = node("Gather", [tables["sb"], idx_lo], sin, axis=0)
        cb = node("Gather", [tables["cb"], idx_lo], sin, axis=0)
        sin_p = node("Add", [node("Mul", [sa, cb], sin), node("Mul", [ca, sb], sin)], sin)
        cos_p = node("Sub", [node("Mul", [ca, cb], cos), node("Mul", [sa, sb], cos)], cos)
        small = node("Mul", [frac, freqs_name], sin)
        sin_d = node("Sin", [small], sin)
        cos_d = node("Cos", [small], cos)
        node("Add", [node("Mul", [sin_p, cos_d], sin), node("Mul", [cos_p, sin_d], sin)], sin, output=sin.output[0])
        node("Sub", [node("Mul", [cos_p, cos_d], cos), node("Mul", [sin_p, sin_d], cos)], cos, output=cos.output[0])
        nodes = list(g.node)
        dead = {i for i, n in enumerate(nodes) if n.name in (sin.name, cos.name)}
        angle = sin.input[0]  # x = t * F: dropped with its Mul when nothing else reads it
        if not any(angle in n.input for i, n in enumerate(nodes) if i not in dead) and \
                angle not in {o.name for o in g.output}:
            dead |= {i for i, n in enumerate(nodes) if angle in n.output}
        position = min(dead)
        kept = [n for i, n in enumerate(nodes) if i not in dead]
        position -= sum(1 for i in dead if i < position)
        del g.node[:]
        g.node.extend(kept[:position] + new + kept[position:])
    return len(sites)
