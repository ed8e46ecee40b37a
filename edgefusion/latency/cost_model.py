"""Roofline cost of an :class:`OpGraph` on a :class:`DeviceProfile`, with kernel fusion and SRAM residency.

* **Fusion**: an elementwise op (bias add, residual add, sigmoid/mul of SiLU, GELU ...) whose activation input
  comes from another op, where every consumer of that tensor is elementwise too, runs inside its producer's
  kernel: no launch overhead, and the intermediate tensor never exists in memory.
* **Engines**: Conv/MatMul/Gemm on the tensor engines (MACs / (MAC/s x precision rate)); softmax, norms,
  activations, elementwise and data movement on the vector engines (elements x ops-per-element / (op/s x rate)).
* **Memory**: weights stream from DRAM once per call. A kernel whose activation working set (inputs + outputs)
  fits the on-chip SRAM keeps its outputs there; otherwise it streams inputs from and outputs to DRAM. Tensors
  stay on chip while live; when SRAM runs out the live tensor needed furthest in the future is spilled (written
  to DRAM, read back by each later consumer) -- Belady's rule. Graph inputs are read from, outputs written to, DRAM.
* **Time** of a kernel = max(compute, DRAM bytes / bandwidth) + per-kernel overhead; a graph adds a per-call
  overhead. Kernels produced by attention tiling are a loop of identical kernels the compiler issues back to back,
  so every tile after the first (and the split/concat) pays the per-tile overhead instead of the per-node one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgefusion.latency.device import DeviceProfile
from edgefusion.latency.op_graph import OpGraph


# repeat kernels the attention tiler generated: tiles after the first (``<node>__t<i>``, i >= 1) and the split /
# concat around them; the first tile (``__t0``) is launched like any kernel and pays the per-node overhead
TILE_KERNEL = re.compile(r"(__t[1-9]\d*|__tile_split|__tile_concat|__split|__concat)$")


@dataclass
class KernelCost:
    """One (fused) kernel's estimate."""

    name: str
    ops: list[str]
    category: str
    precision: str
    block: str
    macs: int
    weight_bytes: int
    dram_bytes: int
    compute_ms: float
    dram_ms: float
    overhead_ms: float
    ms: float
    spilled: bool  # working set did not fit the SRAM


@dataclass
class GraphCost:
    """A whole graph's estimate."""

    kernels: list[KernelCost]
    ms: float
    weight_bytes: int
    dram_bytes: int
    peak_sram_bytes: int
    macs: int
    ops: int


def _fusion_groups(graph: OpGraph) -> list[list[int]]:
    producer = {o: i for i, op in enumerate(graph.ops) for o in op.outputs}
    consumers: dict[str, list[int]] = {}
    for i, op in enumerate(graph.ops):
        for t in op.inputs:
            consumers.setdefault(t, []).append(i)
    group_of: dict[int, int] = {}
    groups: list[list[int]] = []
    for i, op in enumerate(graph.ops):
        target = None
        if op.fusable:
            for t in op.inputs:
                p = producer.get(t)
                if p is not None and all(graph.ops[c].fusable for c in consumers[t]):
                    target = group_of[p]
                    break
        if target is None:
            group_of[i] = len(groups)
            groups.append([i])
        else:
            group_of[i] = target
            groups[target].append(i)
    return groups


def estimate_graph(graph: OpGraph, device: DeviceProfile, inputs_on_chip: bool = False) -> GraphCost:
    """Estimate one graph call on ``device``; ``inputs_on_chip`` starts with the graph inputs in SRAM (when they
    fit), for costing a piece of a larger graph."""
    ops = graph.ops
    groups = _fusion_groups(graph)
    group_of = {i: g for g, members in enumerate(groups) for i in members}
    consumers_g: dict[str, list[int]] = {}
    for g, members in enumerate(groups):
        for i in members:
            for t in ops[i].inputs:
                if group_of.get(_producer_index(graph, t), -1) != g:
                    consumers_g.setdefault(t, []).append(g)
    for t in consumers_g:
        consumers_g[t] = sorted(set(consumers_g[t]))
    outputs_set = set(graph.graph_outputs)
    sram = device.sram_bytes
    size = graph.tensor_bytes
    on_chip: dict[str, int] = {}  # tensor -> bytes, live in SRAM
    off_chip: set[str] = set(graph.graph_inputs)
    occupancy = 0
    if inputs_on_chip and sum(size.get(t, 0) for t in graph.graph_inputs) <= sram:
        on_chip = {t: size.get(t, 0) for t in graph.graph_inputs}
        off_chip.clear()
        occupancy = sum(on_chip.values())
    peak = occupancy
    kernels: list[KernelCost] = []
    te_rate = device.tensor_macs_per_s
    ve_rate = device.vector_ops_per_s
    bw = device.dram_bytes_per_s
    node_overhead_ms = device.overheads["per_node_us"] / 1e3
    tile_overhead_ms = device.overheads.get("per_tile_us", device.overheads["per_node_us"]) / 1e3

    def next_use(t: str, after: int) -> int:
        for g in consumers_g.get(t, []):
            if g > after:
                return g
        return 1 << 30

    for g, members in enumerate(groups):
        member_ops = [ops[i] for i in members]
        ext_in = list(dict.fromkeys(t for op in member_ops for t in op.inputs
                                    if group_of.get(_producer_index(graph, t), -1) != g))
        ext_out = [o for op in member_ops for o in op.outputs
                   if o in outputs_set or any(c != g for c in consumers_g.get(o, []))]
        in_bytes = sum(size.get(t, 0) for t in ext_in)
        out_bytes = sum(size.get(t, 0) for t in ext_out)
        fits = in_bytes + out_bytes <= sram
        dram = sum(op.weight_bytes for op in member_ops)
        dram += sum(size.get(t, 0) for t in ext_in if t not in on_chip)
        if fits:
            staged = sum(size.get(t, 0) for t in ext_in if t not in on_chip)
            need = out_bytes + staged
            # make room: spill live tensors this kernel does not read, needed furthest in the future first
            victims = sorted((t for t in on_chip if t not in ext_in), key=lambda t: -next_use(t, g))
            for t in victims:
                if occupancy + need <= sram:
                    break
                dram += on_chip[t]  # written back to DRAM
                occupancy -= on_chip.pop(t)
                off_chip.add(t)
            if occupancy + need > sram:  # even its own inputs crowd it out: stream instead
                fits = False
        if fits:
            for t in ext_out:
                on_chip[t] = size.get(t, 0)
                occupancy += size.get(t, 0)
            peak = max(peak, occupancy + sum(size.get(t, 0) for t in ext_in if t not in on_chip))
        else:
            dram += out_bytes
            off_chip.update(ext_out)
            peak = max(peak, min(sram, occupancy + in_bytes + out_bytes))
        for t in ext_out:
            if t in outputs_set and t in on_chip:
                dram += on_chip[t]
        te_s = sum(op.macs / (te_rate * device.rate("tensor_engine", op.category, op.precision)[0])
                   for op in member_ops if op.engine == "tensor_engine")
        ve_s = sum(op.elements * device.ops_per_element(op.category)
                   / (ve_rate * device.rate("vector_engine", op.category, op.precision)[0])
                   for op in member_ops if op.engine == "vector_engine")
        compute_ms = max(te_s, ve_s) * 1e3
        dram_ms = dram / bw * 1e3
        head = member_ops[0]
        overhead_ms = tile_overhead_ms if TILE_KERNEL.search(head.name) else node_overhead_ms
        kernels.append(KernelCost(
            name=head.name, ops=[op.name for op in member_ops], category=head.category,
            precision=device.rate(head.engine, head.category, head.precision)[1], block=head.block,
            macs=sum(op.macs for op in member_ops), weight_bytes=sum(op.weight_bytes for op in member_ops),
            dram_bytes=int(dram), compute_ms=compute_ms, dram_ms=dram_ms, overhead_ms=overhead_ms,
            ms=max(compute_ms, dram_ms) + overhead_ms, spilled=not fits))
        # free tensors whose last consumer has run
        for t in list(on_chip):
            if next_use(t, g) == 1 << 30 and t not in outputs_set:
                occupancy -= on_chip.pop(t)
    total = sum(k.ms for k in kernels) + device.overheads["per_graph_us"] / 1e3
    return GraphCost(kernels=kernels, ms=total, weight_bytes=sum(k.weight_bytes for k in kernels),
                     dram_bytes=sum(k.dram_bytes for k in kernels), peak_sram_bytes=int(peak),
                     macs=sum(k.macs for k in kernels), ops=len(ops))


def _producer_index(graph: OpGraph, tensor: str) -> int | None:
    index = getattr(graph, "_producer_cache", None)
    if index is None:
        index = {o: i for i, op in enumerate(graph.ops) for o in op.outputs}
        graph._producer_cache = index  # type: ignore[attr-defined]
    return index.get(tensor)
