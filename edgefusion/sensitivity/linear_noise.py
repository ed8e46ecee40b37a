"""Output noise of every quantization source at once, by first-order propagation (one forward, a few backwards).

Quantizing one source (an activation tensor at 8/16 bits or float16, or a layer's weights to int8/float16) adds a
small local error ``e`` (exactly computable from the float tensor, its calibration range and the exporter's
formula). To first order the UNet output moves by ``J e`` (``J``: Jacobian of the output with respect to that
tensor), and its energy ``||J e||^2`` is what the SQNR needs. With random sign vectors ``u`` at the output, one
backward pass gives ``g = J^T u`` for *every* tensor of the graph at once, and ``(g . e)^2`` is an unbiased
estimate of ``||J e||^2`` (Hutchinson). Averaging over probes and calibration samples makes the pooled estimate
tight: relative spread ``sqrt(2 / (probes * samples))`` (the per-sample view is noisier). A weight's local error is
the change of its node's output when only that weight is replaced (one node re-evaluated).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgefusion.sensitivity.fakequant import fp16_round
from edgefusion.sensitivity.simulate import Chunk, Simulator

ACT_TREATMENTS = (8, 16, "fp16")
WEIGHT_TREATMENTS = ("int8", "fp16")


def source_key(kind: str, name: str, treatment) -> str:
    """``"act|<tensor>|8"``, ``"w|<initializer>|int8"``: the key of one source under one treatment."""
    return f"{kind}|{name}|{treatment}"


@dataclass
class WeightSource:
    """One float initializer that some layer may quantize, and the nodes it feeds."""

    name: str
    axis: int | None  # channel axis when a layer stores it int8; None if it is only ever fp16
    nodes: list[str]


def weight_sources(sim: Simulator) -> list[WeightSource]:
    """Every initializer that int8 or fp16 treatment may touch, with the graph nodes that read it."""
    axes: dict[str, int | None] = {}
    for slots in sim.sites.int8_slots.values():
        for w, axis in slots:
            axes.setdefault(w, axis)
    for inits in sim.sites.float_inits.values():
        for w in inits:
            axes.setdefault(w, None)
    readers: dict[str, list[str]] = {}
    for node in sim.graph.nodes:
        for x in node.inputs:
            if x in axes:
                readers.setdefault(x, []).append(node.name)
    return [WeightSource(w, axes[w], readers.get(w, [])) for w in axes if w in sim.graph.weights]


def local_errors(sim: Simulator, env: dict, n: int) -> dict[str, tuple[list[str], object]]:
    """Per tensor: the source keys whose error lands on it and their errors stacked, ``[keys, n, size]``."""
    import torch

    from edgefusion.quant.emit import activation_qparams

    graph = sim.graph
    node_by = {node.name: node for node in graph.nodes}
    found: dict[str, list[tuple[str, object]]] = {}
    with torch.no_grad():
        det = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in env.items()}
        for w in weight_sources(sim):
            for t in WEIGHT_TREATMENTS:
                if t == "int8" and w.axis is None:
                    continue
                wq = sim.weight(w.name, t, w.axis or 0)
                for node_name in w.nodes:
                    node = node_by[node_name]
                    out = node.outputs[0]
                    delta = graph.run_node(node, det, n, replace={w.name: wq})[0] - det[out]
                    found.setdefault(out, []).append((source_key("w", w.name, t), delta.reshape(n, -1)))
        stacks = {}
        for site in sim.sites.sites:
            x = det[site.tensor].reshape(n, -1)
            extra = found.pop(site.tensor, [])
            buf = torch.empty(len(ACT_TREATMENTS) + len(extra), n, x.shape[1])
            for i, t in enumerate(ACT_TREATMENTS):
                if t == "fp16":
                    buf[i] = fp16_round(x)
                else:  # fused kernel (x * 1/scale rather than x / scale: differs from QDQ only at exact ties)
                    scale, zp = activation_qparams(*sim.range_for(site.tensor, t), t)
                    buf[i] = torch.fake_quantize_per_tensor_affine(x, float(scale), int(zp), 0, 2 ** t - 1)
                buf[i] -= x
            for i, (_, e) in enumerate(extra):
                buf[len(ACT_TREATMENTS) + i] = e
            stacks[site.tensor] = ([source_key("act", site.tensor, t) for t in ACT_TREATMENTS] + [k for k, _ in extra],
                                   buf)
        for tensor, pairs in found.items():
            stacks[tensor] = ([k for k, _ in pairs], torch.stack([e for _, e in pairs]))
        return stacks


def linear_noise(sim: Simulator, chunk: Chunk, probes: int, seed: int = 0,
                 probe_rows: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Estimated output noise energy per sample of ``chunk`` for every source and treatment (key -> [n]).

    ``probe_rows = (total, offset)``: ``chunk`` is rows ``offset..offset+n`` of a chunk of ``total`` samples, and
    gets exactly the probes that chunk would draw with ``seed`` (so a chunk split across workers gives the same
    per-sample estimates, to float rounding)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    graph = sim.graph
    feeds = {k: (v.clone().requires_grad_(True) if v.is_floating_point() else v) for k, v in chunk.feeds.items()}
    node_by = {node.name: node for node in graph.nodes}
    keep = {s.tensor for s in sim.sites.sites}
    for w in weight_sources(sim):
        for name in w.nodes:
            keep |= {x for x in node_by[name].inputs if x} | set(node_by[name].outputs)
    with torch.enable_grad():
        env = graph.run(feeds, keep=keep)
    y = env[sim.output]
    n = y.shape[0]
    errors = local_errors(sim, env, n)
    for name in keep - set(errors) - {sim.output}:  # inputs of weighted nodes: only needed for the errors
        env.pop(name, None)
    keys = sorted({k for ks, _ in errors.values() for k in ks})
    slot = {k: i for i, k in enumerate(keys)}
    proj = torch.zeros(len(keys), n, dtype=torch.float64)  # u . (J e) of the current probe, per source
    handles = []

    def hook_for(tensor: str):
        ks, stacked = errors[tensor]
        rows = torch.tensor([slot[k] for k in ks])

        def hook(g):
            with torch.no_grad():
                v = torch.einsum("knd,nd->kn", stacked, g.reshape(n, -1)).double()
                proj.index_add_(0, rows, v)
        return hook

    for tensor in errors:
        x = env.get(tensor)
        if isinstance(x, torch.Tensor) and x.requires_grad:
            handles.append(x.register_hook(hook_for(tensor)))
    acc = torch.zeros(len(keys), n, dtype=torch.float64)
    try:
        for p in range(probes):
            shape = y.shape if probe_rows is None else (probe_rows[0], *y.shape[1:])
            u = (torch.randint(0, 2, shape, generator=gen) * 2 - 1).to(y.dtype)
            if probe_rows is not None:
                u = u[probe_rows[1]:probe_rows[1] + n]
            proj.zero_()
            y.backward(u, retain_graph=p < probes - 1)
            acc += proj * proj
    finally:
        for h in handles:
            h.remove()
    acc = (acc / probes).numpy()
    return {k: acc[i] for i, k in enumerate(keys)}
