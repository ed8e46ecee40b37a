"""Cost of an :class:`~edgefusion.graph.op_graph.OpGraph` on a :class:`DeviceProfile`, from the hardware up.

* **Compute**: tensor-engine kernels take MACs / (MAC/s x efficiency x precision rate); vector-engine work takes
  elements x operations per element / (lane-op/s x efficiency x precision rate); a fused kernel's tail runs on
  the vector engines while its head runs on the tensor engines (pipelined: the longer of the two).
* **Memory**: SRAM residency and the DRAM traffic of every kernel (:mod:`edgefusion.latency.residency`) at the
  sustained DMA bandwidth. DMA overlaps compute (double buffering, weight prefetch), so a kernel takes the longer
  of its compute and its DRAM time.
* **Overheads**: every kernel pays a launch (a tile after the first of a tiled attention pays the smaller per-tile
  cost: the loop is already set up); a kernel on the other engine than the previous one pays a tensor<->vector
  hand-off (synchronisation through the shared scratchpad: too-small tiles lose to it); a graph call pays the
  host->NPU invocation.
* **Host fallback**: an op the NPU cannot run is priced on the host CPU (FLOPs at its rate, bytes at its
  bandwidth); a fallback that needs an NPU result and feeds the NPU again stops and restarts the NPU, which
  costs ``host.fallback_us`` per segment of consecutive host ops. Work the host can do before the NPU starts
  (it depends on graph inputs only, e.g. the timestep embedding) costs only its compute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgefusion.graph.op_graph import Op, OpGraph
from edgefusion.latency.device import DeviceProfile
from edgefusion.latency.placement import HOST, VIEW, fusion_groups, place_ops
from edgefusion.latency.residency import simulate


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
    spilled: bool  # working set did not fit the SRAM: streamed from/to DRAM
    engine: str = ""  # tensor_engine | vector_engine | host | view
    tile: int = -1
    tensor_ms: float = 0.0  # the tensor engines' share of compute_ms (a fused kernel's head)
    vector_ms: float = 0.0  # the vector engines' share (its tail, or the whole of a vector kernel)


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
    compute_bound_ms: float = 0.0  # all NPU work at peak engine throughput (the busier engine)
    dram_bound_ms: float = 0.0  # compulsory traffic (weights, graph inputs and outputs) at full DRAM bandwidth
    host_ms: float = 0.0
    fallbacks: int = 0  # mid-graph CPU fallback segments


def engine_seconds(graph: OpGraph, device: DeviceProfile, places: list[str]) -> list[tuple[float, float]]:
    """Per op: (tensor-engine s, vector-engine s) at the sustained rates ((0, 0) for host ops and views)."""
    te_rate, ve_rate = device.tensor_macs_per_s, device.vector_ops_per_s
    rates: dict[tuple[str, str, str], float] = {}
    out = []
    for op, place in zip(graph.ops, places):
        if place not in ("tensor_engine", "vector_engine"):
            out.append((0.0, 0.0))
            continue
        key = (op.engine, op.category, op.precision)
        if key not in rates:
            rates[key] = device.rate(*key)[0]
        if op.engine == "tensor_engine":
            out.append((op.macs / (te_rate * rates[key]), 0.0))
        else:
            out.append((0.0, op.elements * device.ops_per_element(op.category) / (ve_rate * rates[key])))
    return out


def host_seconds(op: Op, graph: OpGraph, device: DeviceProfile) -> float:
    """An op on the host CPU: its FLOPs at the host rate plus its activation bytes at the host bandwidth."""
    flops = 2 * op.macs + op.elements * device.ops_per_element(op.category)
    moved = sum(graph.tensor_bytes.get(t, 0) for t in op.inputs + op.outputs) + op.weight_bytes
    return flops / device.host_flops_per_s + moved / device.host_bytes_per_s


def _needs_npu(graph: OpGraph, places: list[str]) -> list[bool]:
    """Per op: whether it (transitively through host ops and views) depends on an NPU result."""
    producer = {t: i for i, op in enumerate(graph.ops) for t in op.outputs}
    out = []
    for i, op in enumerate(graph.ops):
        out.append(any(p is not None and (places[p] not in (HOST, VIEW) or out[p])
                       for p in (producer.get(t) for t in op.inputs)))
    return out


def bounds_ms(graph: OpGraph, device: DeviceProfile, seconds: list[tuple[float, float]] | None = None
              ) -> tuple[float, float]:
    """The physical limit of a graph: (NPU compute at the engines' peak, the busier engine; compulsory DRAM
    traffic -- weights, graph inputs and outputs -- at the published bandwidth)."""
    seconds = engine_seconds(graph, device, place_ops(graph, device)) if seconds is None else seconds
    te = sum(t for t, _ in seconds) * device.tensor_engine["efficiency"]
    ve = sum(v for _, v in seconds) * device.vector_engine["efficiency"]
    compulsory = graph.weight_bytes + sum(graph.tensor_bytes.get(t, 0)
                                          for t in dict.fromkeys(graph.graph_inputs + graph.graph_outputs))
    return max(te, ve) * 1e3, compulsory / device.dram_peak_bytes_per_s * 1e3


def estimate_graph(graph: OpGraph, device: DeviceProfile, inputs_on_chip: bool = False) -> GraphCost:
    """Estimate one graph call on ``device``; ``inputs_on_chip`` starts with the graph inputs in SRAM (when they
    fit), for costing a piece of a larger graph (an attention site)."""
    ops = graph.ops
    places = place_ops(graph, device)
    groups = fusion_groups(graph, places)
    kinds = [places[m[0]] for m in groups]
    traffic = simulate(graph, groups, kinds, device.sram_bytes, inputs_on_chip)
    needs_npu = _needs_npu(graph, places)
    seconds = engine_seconds(graph, device, places)
    last_npu = max((g for g, k in enumerate(kinds) if k not in (HOST, VIEW)), default=-1)
    bw = device.dram_bytes_per_s
    ov = device.overheads
    kernels: list[KernelCost] = []
    prev_engine, in_fallback, fallbacks, host_s = None, False, 0, 0.0
    for g, members in enumerate(groups):
        mops = [ops[i] for i in members]
        head, kind = mops[0], kinds[g]
        dram_ms = traffic.dram_bytes[g] / bw * 1e3
        overhead_ms = 0.0
        te = ve = 0.0
        if kind == HOST:
            compute_ms = sum(host_seconds(op, graph, device) for op in mops) * 1e3
            host_s += compute_ms / 1e3
            if needs_npu[members[0]] and g < last_npu and not in_fallback:
                overhead_ms, in_fallback, prev_engine = device.host["fallback_us"] / 1e3, True, None
                fallbacks += 1
            ms = compute_ms + dram_ms + overhead_ms  # the NPU is stopped: nothing overlaps
        elif kind == VIEW:
            compute_ms, ms = 0.0, dram_ms
        else:
            in_fallback = False
            te = sum(seconds[i][0] for i in members)
            ve = sum(seconds[i][1] for i in members)
            compute_ms = max(te, ve) * 1e3
            overhead_ms = (ov["per_tile_us"] if head.tile >= 1 else ov["per_node_us"]) / 1e3
            if prev_engine is not None and prev_engine != kind:
                overhead_ms += ov["handoff_us"] / 1e3
            prev_engine = kind
            ms = max(compute_ms, dram_ms) + overhead_ms
        precision = head.precision if kind in (HOST, VIEW) else device.rate(head.engine, head.category,
                                                                            head.precision)[1]
        kernels.append(KernelCost(
            name=head.name, ops=[op.name for op in mops], category=head.category, precision=precision,
            block=head.block, macs=sum(op.macs for op in mops), weight_bytes=sum(op.weight_bytes for op in mops),
            dram_bytes=traffic.dram_bytes[g], compute_ms=compute_ms, dram_ms=dram_ms, overhead_ms=overhead_ms,
            ms=ms, spilled=traffic.streamed[g], engine=kind, tile=head.tile, tensor_ms=te * 1e3, vector_ms=ve * 1e3))
    total = sum(k.ms for k in kernels) + ov["per_graph_us"] / 1e3
    compute_bound, dram_bound = bounds_ms(graph, device, seconds)
    return GraphCost(kernels=kernels, ms=total, weight_bytes=sum(k.weight_bytes for k in kernels),
                     dram_bytes=sum(k.dram_bytes for k in kernels), peak_sram_bytes=traffic.peak_bytes,
                     macs=sum(k.macs for k in kernels), ops=len(ops), compute_bound_ms=compute_bound,
                     dram_bound_ms=dram_bound, host_ms=host_s * 1e3, fallbacks=fallbacks)


def site_cost_ms(graph: OpGraph, device: DeviceProfile) -> float:
    """Milliseconds of a piece of a graph (e.g. one attention site, tiled or not) whose inputs are on chip when they
    fit: the cost function the tiling planner is given."""
    return estimate_graph(graph, device, inputs_on_chip=True).ms - device.overheads["per_graph_us"] / 1e3
