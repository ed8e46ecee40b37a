"""Give every bias its own initializer: the exporter shares identical constants between nodes (a random or freshly
initialised model's all-zero biases become one tensor read by every Linear and norm), but an int32 bias is quantized
with its own layer's scale (input scale x weight scale), so a shared one would be wrong for all but one reader."""

from __future__ import annotations

from pathlib import Path

import onnx

_BIAS_INPUT = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2, "LayerNormalization": 2}  # an integer norm's bias is int32


def _bias_uses(model: onnx.ModelProto) -> set[tuple[str, str]]:
    """``(node name, initializer)`` pairs where the node reads the initializer as a layer bias."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    uses = set()
    for n in g.node:
        slot = _BIAS_INPUT.get(n.op_type)
        if slot is not None and len(n.input) > slot and n.input[slot] in inits:
            uses.add((n.name, n.input[slot]))
        if n.op_type == "Add" and len(n.input) == 2:
            for a, c in (n.input, n.input[::-1]):
                p = producer.get(a)
                if p is not None and p.op_type == "MatMul" and c in inits and len(inits[c].dims) == 1:
                    uses.add((n.name, c))
    return uses


def unshare_biases(model: onnx.ModelProto) -> int:
    """Copy every bias initializer that more than one node reads (biases and other readers alike, such as a norm
    reading the same constant), one copy per extra input slot; returns the number of copies made. Top-level graph
    only (the dynamo exporter writes no subgraphs here); initializers that are also graph inputs are left shared. Copies keep external-data references (the bytes are not duplicated on disk)."""
    g = model.graph
    # a graph input of the same name may override the initializer at run time: its readers must keep reading it
    biases = {init for _, init in _bias_uses(model)} - {i.name for i in g.input}
    if not biases:
        return 0
    inits = {t.name: t for t in g.initializer}
    seen: dict[str, int] = {}
    copies = []
    names = {t.name for t in g.initializer} | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    for node in g.node:
        for i, name in enumerate(node.input):
            if name not in biases:
                continue
            k = seen.get(name, 0)
            seen[name] = k + 1
            if k == 0:
                continue  # the first reader keeps the original
            new = f"{name}__{k}"
            while new in names:
                new += "_"
            names.add(new)
            t = onnx.TensorProto()
            t.CopyFrom(inits[name])
            t.name = new
            copies.append(t)
            node.input[i] = new
    g.initializer.extend(copies)
    return len(copies)


def unshare_biases_file(path: Path) -> int:
    """:func:`unshare_biases` on the graph at ``path`` (external data left in place); returns the copies made."""
    model = onnx.load(str(path), load_external_data=False)
    n = unshare_biases(model)
    if n:
        onnx.save(model, str(path))
    return n
