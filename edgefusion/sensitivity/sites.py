"""Where quantization error can enter a graph, and which layers decide it: the structure behind ``quant/plan.py``.

A *site* is a layer-boundary activation tensor with its producing layer and the layers that read it (through
reshapes/transposes). Its treatment under any assignment of precisions follows the exporter's rules: integer QDQ at
the widest width its producer and integer consumers ask for, else float16 rounding when its producer is FP16.
Weights are int8 per channel in integer layers, float16 in FP16 layers. :meth:`QuantSites.plan` rebuilds the same
:class:`QuantPlan` as :func:`plan_quantization` in a fraction of the time (a test checks they agree), so the
policy search can re-plan thousands of times.
"""

from __future__ import annotations

from collections import ChainMap
from dataclasses import dataclass, field

import onnx

from edgefusion.graph.split_concat_convs import is_partial_sum
from edgefusion.quant.graph_index import GraphIndex
from edgefusion.quant.layers import Layer
from edgefusion.quant.plan import (WEIGHTED_LAYER_TYPES, QuantPlan, is_internal, layer_biases, layer_constants,
                                  usable_biases)
from edgefusion.quant.precision import Precision
from edgefusion.quant.weight_handlers import fp16_weight_inputs, weight_slots


@dataclass
class Site:
    """One boundary activation tensor."""

    tensor: str
    producer: str | None  # layer name; None for a graph input
    consumers: list[str]  # non-passthrough layers reading it (directly or through passthrough ops)
    accumulator: bool = False  # a partial sum inside its producer (16-bit in an integer layer, see quant/plan.py)
    internal: bool = False  # inside an integer SiLU/GELU/norm layer: quantized at the layer's width (quant/plan.py)


@dataclass
class QuantSites:
    """All sites and weight slots of one graph, indexed by layer."""

    sites: list[Site] = field(default_factory=list)
    int8_slots: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # layer -> [(initializer, axis)]
    float_inits: dict[str, list[str]] = field(default_factory=dict)  # layer -> float initializers it reads
    bias_slots: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)  # layer -> [(bias, input, weight)]
    const_slots: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # layer -> [(initializer, bits)]
    layer_sites: dict[str, list[int]] = field(default_factory=dict)  # layer -> indices of sites it touches
    op_types: dict[str, str] = field(default_factory=dict)  # layer -> op type (non-passthrough layers)

    @classmethod
    def build(cls, model: onnx.ModelProto, layers: list[Layer], index: GraphIndex | None = None) -> QuantSites:
        """Index ``model``'s layers (the same traversal as :func:`plan_quantization`)."""
        idx = index or GraphIndex.build(model)
        layer_of = {n: layer for layer in layers for n in layer.nodes}
        nodes_by_name = {n.name: n for n in model.graph.node}
        out = cls(op_types={la.name: la.op_type for la in layers if not la.passthrough})

        def consumers(tensor: str, own: Layer | None, seen: set[str]) -> list[str]:
            found = []
            for node in idx.consumers.get(tensor, []):
                layer = layer_of[node.name]
                if layer is own:
                    continue
                if layer.passthrough:
                    for o in node.output:
                        if o in idx.activations and o not in seen:
                            seen.add(o)
                            found += consumers(o, own, seen)
                    continue
                if tensor in idx.activations:
                    found.append(layer.name)
            return found

        boundary: list[tuple[str, Layer | None, str]] = [(t, None, "") for t in idx.graph_inputs]
        for layer in layers:
            if layer.passthrough:
                continue
            members = set(layer.nodes)
            for node in (nodes_by_name[n] for n in layer.nodes):
                for o in node.output:
                    if o and ([c for c in idx.consumers.get(o, []) if c.name not in members]
                              or o in idx.graph_outputs):
                        boundary.append((o, layer, ""))
                    elif o and is_partial_sum(node):
                        boundary.append((o, layer, "accumulator"))
                    elif o and is_internal(node, layer):
                        boundary.append((o, layer, "internal"))
        stop = frozenset(t for t, _, inside in boundary if not inside and t in idx.activations)
        for tensor, layer, inside in boundary:
            if tensor not in idx.activations:
                continue
            site = Site(tensor, layer.name if layer else None,
                        [] if inside else consumers(tensor, layer, {tensor}), inside == "accumulator",
                        inside == "internal")
            out.sites.append(site)
            for name in {site.producer, *site.consumers} - {None}:
                out.layer_sites.setdefault(name, []).append(len(out.sites) - 1)
        for layer in layers:
            if layer.passthrough:
                continue
            slots, inits = [], []
            for node in (nodes_by_name[n] for n in layer.nodes):
                slots += [(node.input[s], a) for s, a in weight_slots(node, idx)]
                inits += fp16_weight_inputs(node, idx)
            out.int8_slots[layer.name] = slots
            out.float_inits[layer.name] = inits
            members = [nodes_by_name[n] for n in layer.nodes]
            biases = layer_biases(members, idx, stop)
            if biases:
                out.bias_slots[layer.name] = biases
            consts = layer_constants(members, idx, layer.op_type)
            if consts:
                out.const_slots[layer.name] = consts
        return out

    def to_dict(self) -> dict:
        """Plain-dict form for JSON (the report carries it, so policies can be evaluated without the graph)."""
        return {"sites": [[s.tensor, s.producer, s.consumers]
                          + ([True] if s.accumulator else ["internal"] if s.internal else []) for s in self.sites],
                "int8_slots": {k: [[w, a] for w, a in v] for k, v in self.int8_slots.items()},
                "float_inits": self.float_inits, "op_types": self.op_types,
                "bias_slots": {k: [list(b) for b in v] for k, v in self.bias_slots.items()},
                "const_slots": {k: [list(c) for c in v] for k, v in self.const_slots.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> QuantSites:
        """Inverse of :meth:`to_dict`."""
        out = cls(sites=[Site(s[0], s[1], list(s[2]), len(s) > 3 and s[3] is True, len(s) > 3 and s[3] == "internal")
                         for s in d["sites"]],
                  int8_slots={k: [(w, int(a)) for w, a in v] for k, v in d["int8_slots"].items()},
                  float_inits={k: list(v) for k, v in d["float_inits"].items()}, op_types=dict(d["op_types"]),
                  bias_slots={k: [tuple(b) for b in v] for k, v in d.get("bias_slots", {}).items()},
                  const_slots={k: [(c, int(b)) for c, b in v] for k, v in d.get("const_slots", {}).items()})
        for i, site in enumerate(out.sites):
            for name in {site.producer, *site.consumers} - {None}:
                out.layer_sites.setdefault(name, []).append(i)
        return out

    def site_treatment(self, site: Site, precisions: dict[str, Precision]) -> int | str | None:
        """8 or 16 (integer QDQ bits), ``"fp16"`` (rounded through float16) or None (left float)."""
        prod = precisions.get(site.producer) if site.producer else None
        if site.accumulator:
            return 16 if prod is not None and prod.is_integer else "fp16" if prod is Precision.FP16 else None
        if site.internal:
            return prod.activation_bits if prod is not None and prod.is_integer else None
        bits = [precisions[c].activation_bits for c in site.consumers if c in precisions and precisions[c].is_integer]
        if prod is not None and prod.is_integer:
            bits.append(prod.activation_bits)
        if bits:
            return max(bits)
        return "fp16" if prod is Precision.FP16 else None

    def weighted_layers(self) -> set[str]:
        """Layers with int8 weight slots of a type that reads and writes one activation width (``quant/plan.py``)."""
        return {n for n, slots in self.int8_slots.items() if slots and self.op_types.get(n) in WEIGHTED_LAYER_TYPES}

    def promotions(self, precisions: dict[str, Precision], changed, weighted: set[str] | None = None
                   ) -> dict[str, Precision]:
        """The promotions that a change of the ``changed`` layers (already in ``precisions``) sets off: a W8A8 layer
        with int8 weights that reads or writes a 16-bit boundary tensor touched by a changed (or promoted) layer
        becomes W8A16, until none is left. Only the sites near the change are looked at."""
        weighted = self.weighted_layers() if weighted is None else weighted
        out: dict[str, Precision] = {}
        state = ChainMap(out, precisions)
        frontier = set(changed)
        while frontier:
            wider = {n for i in {i for n in frontier for i in self.layer_sites.get(n, [])}
                     for site in [self.sites[i]] if not (site.accumulator or site.internal)
                     and self.site_treatment(site, state) == 16
                     for n in [*site.consumers, *([site.producer] if site.producer else [])]
                     if n in weighted and state.get(n) is Precision.W8A8}
            out.update(dict.fromkeys(wider, Precision.W8A16))
            frontier = wider
        return out

    def settle(self, precisions: dict[str, Precision]) -> dict[str, Precision]:
        """``precisions`` with the exporter's promotions (``quant/plan.py``): a W8A8 layer with int8 weights that
        reads or writes a 16-bit boundary tensor becomes W8A16, until none is left."""
        return {**precisions, **self.promotions(precisions, self.layer_sites)}

    def plan(self, precisions: dict[str, Precision]) -> QuantPlan:
        """The :class:`QuantPlan` the exporter would build for these layer precisions (owners not tracked; the
        promotions of :meth:`settle` applied)."""
        settled = self.settle(precisions)
        plan = QuantPlan(promoted=dict(sorted((n, p) for n, p in settled.items() if precisions.get(n) is not p)))
        precisions = settled
        for site in self.sites:
            t = self.site_treatment(site, precisions)
            if t == "fp16":
                plan.fp16_tensors.append(site.tensor)
            elif t is not None:
                plan.act_bits[site.tensor] = t
        fp16 = []
        for name in self.int8_slots:  # layer order, as the exporter walks it
            p = precisions.get(name)
            if p is None:
                continue
            if p.is_integer:
                for bias, source, weight in self.bias_slots.get(name, []):
                    plan.int32_biases[bias] = (source, weight)
                for w, axis in self.int8_slots.get(name, []):
                    plan.int8_weights.setdefault(w, axis)
                for c, bits in self.const_slots.get(name, []):
                    plan.const_bits.setdefault(c, bits)
            elif p is Precision.FP16:
                fp16 += self.float_inits.get(name, [])
        plan.fp16_weights = sorted(set(fp16) - set(plan.int8_weights) - set(plan.int32_biases)
                                   - set(plan.const_bits))
        plan.int32_biases = usable_biases(plan)
        return plan
