"""Quantize one float ONNX graph under a policy: layers -> precisions -> plan -> streamed ranges -> QDQ graph.

Integer GroupNorm layers are first written as layer norms (``edgefusion.graph.group_norm_as_layer_norm``, in a
temporary copy of the float graph beside it): the form an NPU runs as integer ops."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from edgefusion.errors import EdgeFusionError
from edgefusion.quant.graph_index import GraphIndex
from edgefusion.quant.integer_forms import write_integer_forms
from edgefusion.quant.layers import Layer, ensure_node_names, find_layers
from edgefusion.quant.plan import QuantPlan, plan_quantization
from edgefusion.quant.policy import PolicySpec, ResolvedPolicy, resolve_policy
from edgefusion.quant.emit import emit_qdq
from edgefusion.quant.range_methods import estimate_ranges
from edgefusion.quant.storage import StorageNeeds
from edgefusion.quant.weight_rounding import WEIGHT_ROUNDING, round_weights
from edgefusion.runtime.session import release_freed_memory


@dataclass
class QuantizedGraph:
    """What :func:`quantize_graph` produced."""

    path: Path
    layers: list[Layer]
    resolved: ResolvedPolicy
    plan: QuantPlan
    ranges: dict[str, tuple[float, float]]
    range_rule: dict  # the calibration method's choice (RangeRule.summary())
    weight_rounding: dict  # how int8 weights were rounded (``round_weights``' summary; {"method": "nearest"})

    def qdq_by_op_type(self) -> dict[str, dict[str, int]]:
        """Activation QDQ pairs per owning layer op type and bit width (graph inputs count as ``input``)."""
        op_of = {layer.name: layer.op_type for layer in self.layers}
        out: dict[str, Counter] = {}
        for tensor, bits in self.plan.act_bits.items():
            op = op_of.get(self.plan.act_owner.get(tensor, ""), "input")
            out.setdefault(op, Counter())[str(bits)] += 1
        return {k: dict(v) for k, v in sorted(out.items())}


def prepare_float_graph(float_path: Path) -> onnx.ModelProto:
    """Load a float graph's structure (no weights) and make sure every node has a name (saved back if needed)."""
    model = onnx.load(str(float_path), load_external_data=False)
    if any(not n.name for n in model.graph.node):
        ensure_node_names(model)
        onnx.save(model, str(float_path))
    return model


def quantize_graph(float_path: Path, out_path: Path, component: str, spec: PolicySpec,
                   feeds: Sequence[dict[str, np.ndarray]], progress: bool = False, method: str | None = None,
                   groups: Sequence[int] | None = None, storage: StorageNeeds = StorageNeeds(),
                   weight_rounding: str = "gptq") -> QuantizedGraph:
    """Resolve ``spec`` on the graph's layers, estimate ranges over ``feeds`` with ``method`` (None: the default;
    ``groups``: the prompt each feed came from, None: all from one) and write the QDQ graph. ``storage``: what the
    device needs of the stored tensors (``DeviceProfile.storage_needs()``; default: per-channel weights, uint16);
    ``weight_rounding``: ``gptq`` (the int8 weights of linear layers that read 16-bit tensors rounded against
    their inputs, ``edgefusion.quant.weight_rounding``) or ``nearest``. The result's ``resolved`` precisions
    include the plan's promotions (``plan.promoted``)."""
    if weight_rounding not in WEIGHT_ROUNDING:
        raise EdgeFusionError(f"unknown weight rounding '{weight_rounding}'",
                              f"pass --weight-rounding {' | '.join(WEIGHT_ROUNDING)}")
    float_path = Path(float_path)
    feeds = list(feeds)
    model = prepare_float_graph(float_path)
    layers = find_layers(model, component)
    resolved = resolve_policy(spec, layers)
    source = float_path
    try:
        rewritten = write_integer_forms(model, layers, resolved, component, float_path.parent)
        if rewritten is not layers:  # integer GroupNorms as layer norms (an NPU runs that form as integer ops)
            source = float_path.with_name(f".{Path(out_path).stem}.{float_path.name}")  # beside: shares the weights
            onnx.save(model, str(source))
            layers = rewritten  # the same names: ``resolved`` still applies
        plan = plan_quantization(model, layers, resolved, GraphIndex.build(model), storage)
        if plan.promoted:  # what runs: weighted layers promoted to one width (quant/plan.py)
            resolved = ResolvedPolicy(resolved.policy, {**resolved.precisions, **plan.promoted}, resolved.op_types)
        del model
        rule = estimate_ranges(source, plan, feeds, groups, method, progress=progress,
                               desc=f"{component} ranges") if plan.act_bits else None
        ranges = rule.ranges(plan.act_bits) if rule else {}
        rounded, rounding = ({}, {"method": "nearest"}) if weight_rounding == "nearest" else \
            round_weights(source, plan, feeds, progress)
        path = emit_qdq(source, Path(out_path), plan, ranges, rounded=rounded)
        del rounded
    finally:
        if source != float_path:
            source.unlink(missing_ok=True)
    release_freed_memory()
    return QuantizedGraph(path, layers, resolved, plan, ranges, rule.summary() if rule else {}, rounding)
