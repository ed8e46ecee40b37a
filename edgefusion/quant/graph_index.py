"""Producer/consumer/type lookups over an ONNX graph (structure only; weights are never loaded here)."""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from edgefusion.graph.shapes import infer_weight_free


@dataclass
class GraphIndex:
    """Who produces and who consumes each tensor, which tensors are float activations, which are initializers."""

    producer: dict[str, onnx.NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)
    elem_type: dict[str, int] = field(default_factory=dict)
    initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)
    graph_inputs: list[str] = field(default_factory=list)
    graph_outputs: list[str] = field(default_factory=list)
    activations: set[str] = field(default_factory=set)  # float tensors that depend on a graph input

    @classmethod
    def build(cls, model: onnx.ModelProto) -> "GraphIndex":
        """Index ``model`` (shape inference is run on a weight-free copy to learn tensor types)."""
        g = model.graph
        idx = cls()
        idx.initializers = {t.name: t for t in g.initializer}
        idx.graph_inputs = [i.name for i in g.input if i.name not in idx.initializers]
        idx.graph_outputs = [o.name for o in g.output]
        inferred = infer_weight_free(model)
        for vi in list(inferred.graph.value_info) + list(g.input) + list(g.output) + list(g.value_info):
            if vi.type.HasField("tensor_type"):
                idx.elem_type[vi.name] = vi.type.tensor_type.elem_type
        for t in g.initializer:
            idx.elem_type[t.name] = t.data_type
        for node in g.node:
            for o in node.output:
                idx.producer[o] = node
            for i in node.input:
                if i:
                    idx.consumers.setdefault(i, []).append(node)
        frontier = list(idx.graph_inputs)
        reached = set(frontier)
        while frontier:
            t = frontier.pop()
            for node in idx.consumers.get(t, []):
                for o in node.output:
                    if o and o not in reached:
                        reached.add(o)
                        frontier.append(o)
        idx.activations = {t for t in reached if idx.elem_type.get(t) == onnx.TensorProto.FLOAT}
        return idx
