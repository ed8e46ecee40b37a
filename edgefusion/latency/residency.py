"""SRAM residency: which tensors a compiled graph keeps on chip for their whole life, and the DRAM traffic of every
kernel.

Like an NPU compiler's static memory planner, every *buffer* is placed once: in SRAM for its whole life, or in
DRAM. A buffer is a tensor, together with the output a vector-engine kernel writes over it in place (when the
kernel is its last use). Buffers are placed shortest-lived first (then smallest, then earliest): a buffer stays on
chip when, at every kernel of its life, it fits the SRAM together with all the buffers placed before it that are
live there -- on chip or not. That rule never depends on another buffer's placement, so a larger SRAM only moves
buffers on chip; every kernel's DRAM traffic then only shrinks (the property the tests check), and whatever is on
chip at a kernel fits.

DRAM traffic of a kernel (views -- Concat/Split/Slice -- have no kernel, they address parts of their inputs):

* its weights, streamed once per call;
* each input in DRAM (a GroupNorm reads it twice: statistics first, since a group spans the whole tensor); an
  input on chip whose data the NPU did not produce on chip (a graph input, a host result, a view of a DRAM
  tensor) is loaded once, at its first use;
* each output in DRAM, every graph output and every tensor the host reads (written through); for an output on
  chip, the parts a view hands to a DRAM tensor (a slice of it, or its slot in a concatenation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgefusion.graph.op_graph import OpGraph

COMPUTE = ("tensor_engine", "vector_engine")


@dataclass
class Traffic:
    """Per kernel: DRAM bytes moved by the NPU's DMA and whether it streamed (some tensor of it lives in DRAM);
    the peak SRAM occupancy; per tensor, whether it is on chip."""

    dram_bytes: list[int]
    streamed: list[bool]
    peak_bytes: int
    on_chip: dict[str, bool]


def _find(parent: dict[str, str], t: str) -> str:
    while parent.get(t, t) != t:
        parent[t] = parent.get(parent[t], parent[t])
        t = parent[t]
    return t


def simulate(graph: OpGraph, groups: list[list[int]], kinds: list[str], sram_bytes: float,
             inputs_on_chip: bool = False) -> Traffic:
    """Place every buffer and account each kernel's DRAM traffic (see the module docstring). ``inputs_on_chip``:
    the graph inputs were just produced on chip (costing a piece of a larger graph), not loaded from DRAM."""
    ops, size = graph.ops, graph.tensor_bytes
    group_of = {i: g for g, members in enumerate(groups) for i in members}
    producer = {t: group_of[i] for i, op in enumerate(ops) for t in op.outputs}
    ext_in, ext_out, uses = [], [], {}
    for g, members in enumerate(groups):
        ins = list(dict.fromkeys(t for i in members for t in ops[i].inputs if producer.get(t, -1) != g))
        ext_in.append(ins)
        for t in ins:
            uses.setdefault(t, []).append(g)
    outputs = set(graph.graph_outputs)
    for g, members in enumerate(groups):
        ext_out.append([t for i in members for t in ops[i].outputs if t in outputs or t in uses])
    compute_uses = {t: [u for u in us if kinds[u] in COMPUTE] for t, us in uses.items()}
    host_read = {t for g, k in enumerate(kinds) if k == "host" for t in ext_in[g]}
    view_of = {t: ext_in[g] for g, k in enumerate(kinds) if k == "view" for t in ext_out[g]}  # view output -> inputs
    view_children: dict[str, list[str]] = {}
    for t, srcs in view_of.items():
        for s in srcs:
            view_children.setdefault(s, []).append(t)
    npu_made = {t for t, g in producer.items() if kinds[g] in COMPUTE}
    if inputs_on_chip:
        npu_made.update(graph.graph_inputs)

    # in place: a vector kernel writes its output over an input whose buffer dies with it
    parent: dict[str, str] = {}
    last = {t: us[-1] for t, us in uses.items()}
    for g, kind in enumerate(kinds):
        if kind != "vector_engine" or len(ext_out[g]) != 1 or ext_out[g][0] in view_of:
            continue
        out = ext_out[g][0]
        for t in ext_in[g]:
            r = _find(parent, t)
            if t in npu_made and last.get(r) == g and t not in outputs and t not in host_read \
                    and t not in view_children and size.get(t, 0) >= size.get(out, 0):
                parent[out] = r
                last[r] = last.get(out, g)
                break

    # each buffer: bytes and its life over the compute kernels (positions in ``load``)
    compute_pos = np.cumsum([k in COMPUTE for k in kinds]) - 1
    members: dict[str, list[str]] = {}
    for t in size:
        members.setdefault(_find(parent, t), []).append(t)
    spans = {}
    for r, ms in members.items():
        if any(t in outputs or t in host_read for t in ms if t in view_of):
            continue  # a view the host or the caller reads stays in DRAM
        touched = [producer[t] for t in ms if t in npu_made and t in producer] + \
                  [u for t in ms for u in compute_uses.get(t, ())]
        if not touched and not any(t in npu_made or t in view_of for t in ms):
            continue  # no NPU kernel makes or reads it: nothing to place
        starts = [producer[t] for t in ms if t in producer] or [
            min(touched or [u for t in ms for u in uses.get(t, ())] or [0])]
        first = min(starts)
        end = max([first] + [u for t in ms for u in uses.get(t, ())])
        lo = int(compute_pos[first]) + (0 if kinds[first] in COMPUTE else 1) if len(kinds) else 0
        spans[r] = (max(size.get(t, 0) for t in ms), lo, int(compute_pos[end]) if len(kinds) else -1, first)
    order = sorted(spans, key=lambda r: (spans[r][2] - spans[r][1], spans[r][0], spans[r][3], r))
    n_compute = int(compute_pos[-1]) + 1 if len(kinds) else 0
    load = np.zeros(max(n_compute, 1))
    occupancy = np.zeros(max(n_compute, 1))
    resident: dict[str, bool] = {}
    for r in order:
        nbytes, lo, hi, _ = spans[r]
        if hi < lo:  # a view between two kernels: no kernel sees it, it takes no SRAM of its own
            resident[r] = True
            continue
        if float(load[lo:hi + 1].max()) + nbytes <= sram_bytes:
            resident[r] = True
            occupancy[lo:hi + 1] += nbytes
        load[lo:hi + 1] += nbytes
    on_chip = {t: resident.get(_find(parent, t), False) for t in size}

    data_on_chip: dict[str, bool] = {}  # on chip and produced there (no load needed)

    def made_on_chip(t: str) -> bool:
        if t not in data_on_chip:
            srcs = view_of.get(t)
            data_on_chip[t] = on_chip.get(t, False) and (
                t in npu_made or _find(parent, t) != t or (srcs is not None and all(made_on_chip(s) for s in srcs)))
        return data_on_chip[t]

    def compute_source(t: str) -> str | None:  # the NPU kernel output holding ``t``'s data on chip
        while t not in npu_made:
            srcs = view_of.get(t)
            if not srcs or len(srcs) != 1:
                return None
            t = srcs[0]
        return t

    handed: dict[str, int] = {}  # on-chip tensor -> bytes its producer writes for views into DRAM tensors
    for o, srcs in view_of.items():
        if on_chip.get(o, False):
            continue
        for s in srcs:
            src = compute_source(s) if on_chip.get(s, False) else None
            if src is not None and on_chip.get(src, False):
                handed[src] = handed.get(src, 0) + min(size.get(s, 0), size.get(o, 0))

    dram_out, streamed_out, loaded = [], [], set()
    for g, kind in enumerate(kinds):
        if kind not in COMPUTE:
            dram_out.append(0)
            streamed_out.append(False)
            continue
        mops = [ops[i] for i in groups[g]]
        dram = sum(op.weight_bytes for op in mops)
        reads = 2 if any(op.category == "GroupNorm" for op in mops) else 1
        streamed = False
        for t in ext_in[g]:
            if not on_chip.get(t, False):
                dram += reads * size.get(t, 0)
                streamed = True
            elif not made_on_chip(t) and t not in loaded:
                dram += size.get(t, 0)
                loaded.add(t)
        for t in ext_out[g]:
            if not on_chip.get(t, False) or t in outputs or t in host_read:
                dram += size.get(t, 0)
                streamed = streamed or not on_chip.get(t, False)
            else:
                dram += min(handed.get(t, 0), size.get(t, 0))
        dram_out.append(int(dram))
        streamed_out.append(streamed)
    return Traffic(dram_out, streamed_out, int(occupancy.max()) if n_compute else 0, on_chip)
