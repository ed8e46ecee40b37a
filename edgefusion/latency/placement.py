"""Where each op of an :class:`~edgefusion.graph.op_graph.OpGraph` runs on a device, and which ops fuse into one
kernel.

* **Placement**: Conv/MatMul/Gemm on the tensor engines; softmax, norms, activations, elementwise and data
  movement on the vector engines; Concat/Split/Slice are views (no kernel); an op the NPU compiler does not
  support (``host.ops`` of the profile) or that keeps FP32 (no NPU precision) falls back to the host CPU.
* **Fusion**: an elementwise op (bias add, residual add, sigmoid/mul of SiLU, GELU ...) whose activation input
  comes from another NPU op, where every consumer of that tensor is elementwise too, runs inside its producer's
  kernel: no launch, no hand-off, and the intermediate tensor never exists in memory.
"""

from __future__ import annotations

from edgefusion.graph.op_graph import OpGraph
from edgefusion.latency.device import DeviceProfile

HOST, VIEW = "host", "view"


def place_ops(graph: OpGraph, device: DeviceProfile) -> list[str]:
    """Per op: ``tensor_engine``, ``vector_engine``, ``view`` or ``host``. Vector work that depends on graph inputs
    only and feeds a host op, or reads one (the sinusoid of the timestep embedding: the angle before its Sin/Cos,
    the angle-sum products after them), is done on the host before the NPU starts."""
    places = [VIEW if op.engine == VIEW else HOST if device.runs_on_host(op.op_type, op.precision) else op.engine
              for op in graph.ops]
    producer = {t: i for i, op in enumerate(graph.ops) for t in op.outputs}
    input_only: list[bool] = []  # no tensor-engine work, and nothing but graph inputs upstream (cheap to hoist)
    for op in graph.ops:
        input_only.append(op.engine != "tensor_engine" and all(
            producer.get(t) is None or input_only[producer[t]] for t in op.inputs))
    consumers: dict[int, list[int]] = {}
    for i, op in enumerate(graph.ops):
        for t in op.inputs:
            if t in producer:
                consumers.setdefault(producer[t], []).append(i)
    feeds_host = [False] * len(graph.ops)
    for i in range(len(graph.ops) - 1, -1, -1):
        feeds_host[i] = any(places[c] == HOST or (input_only[c] and feeds_host[c]) for c in consumers.get(i, ()))
        if input_only[i] and feeds_host[i] and places[i] != VIEW:
            places[i] = HOST
    for i, op in enumerate(graph.ops):  # and input-only work that reads the host's results
        if input_only[i] and places[i] != VIEW and any(
                t in producer and places[producer[t]] == HOST for t in op.inputs):
            places[i] = HOST
    return places


def fusion_groups(graph: OpGraph, places: list[str]) -> list[list[int]]:
    """Op indices of each kernel in execution order (a kernel's first op is its head)."""
    producer = {o: i for i, op in enumerate(graph.ops) for o in op.outputs}
    consumers: dict[str, list[int]] = {}
    for i, op in enumerate(graph.ops):
        for t in op.inputs:
            consumers.setdefault(t, []).append(i)
    npu = {"tensor_engine", "vector_engine"}
    group_of: dict[int, int] = {}
    groups: list[list[int]] = []
    for i, op in enumerate(graph.ops):
        target = None
        if op.fusable and places[i] in npu:
            for t in op.inputs:
                p = producer.get(t)
                if p is None or places[p] not in npu or graph.ops[p].tile != op.tile or not all(
                        graph.ops[c].fusable and places[c] in npu for c in consumers[t]):
                    continue
                # the other inputs must exist when the producer's kernel runs
                if all(producer.get(u) is None or group_of[producer[u]] <= group_of[p] for u in op.inputs):
                    target = group_of[p]
                    break
        if target is None:
            group_of[i] = len(groups)
            groups.append([i])
        else:
            group_of[i] = target
            groups[target].append(i)
    return groups
