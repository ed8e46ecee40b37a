"""Split a convolution that reads a channel concatenation into one convolution per concatenated input, summed.

``Conv(Concat(a, b), W) + bias == Conv(a, W[:, :Ca]) + Conv(b, W[:, Ca:]) + bias`` exactly (up to float summation
order). The UNet's up blocks concatenate the upsampled path with the encoder's skip tensor, whose ranges differ by
about an order of magnitude; a 1x1 ``conv_shortcut`` then reads the concatenation. Quantized as one tensor, the
concatenation takes the wider range and the skip half loses most of its 8 bits; split, each half keeps the
quantizer its producer gave it (Q-Diffusion's shortcut-splitting, in a form an integer NPU runs: two integer
convolutions and an add). The partial sums are marked (node metadata :data:`PARTIAL_SUM_KEY`): the quantizer gives
them 16-bit QDQ in integer layers, as an accumulator output, so the split costs no precision of its own.

Every new node carries the original convolution's metadata, so layer discovery keeps one layer with the original
name and the policy rules that matched it still match.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgefusion.graph.naming import node_attr, unique_name
from edgefusion.graph.shapes import tensor_shapes

PARTIAL_SUM_KEY = "edgefusion.partial_sum"


def is_partial_sum(node: onnx.NodeProto) -> bool:
    """Whether ``node``'s output is a partial sum written by :func:`split_concat_convs`."""
    return any(p.key == PARTIAL_SUM_KEY for p in node.metadata_props)


def split_concat_convs(model: onnx.ModelProto, base_dir: str | Path | None = None) -> int:
    """Rewrite, in place, every ungrouped ``Conv`` whose data input is a ``Concat`` along channels of two or more
    activations with known channel counts; returns the number of convolutions split. ``base_dir``: where the
    graph's external weight data lives (the split weights are stored inline; the original weight is dropped)."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    shapes = None
    used = {n.name for n in g.node} | {o for n in g.node for o in n.output} | set(inits) | {i.name for i in g.input}
    new_nodes: list[onnx.NodeProto] = []
    dropped_inits: set[str] = set()
    dead: set[str] = set()  # outputs of concatenations no one reads any more
    count = 0
    for node in g.node:
        cat = producer.get(node.input[0]) if node.op_type == "Conv" else None
        w = inits.get(node.input[1]) if cat is not None and len(node.input) > 1 else None
        if (cat is None or cat.op_type != "Concat" or w is None or node_attr(node, "group", 1) != 1
                or readers.get(w.name) != 1 or len(cat.input) < 2
                or node_attr(cat, "axis", None) not in (1, 1 - len(w.dims))):
            new_nodes.append(node)
            continue
        if shapes is None:
            shapes = tensor_shapes(model)
        chans = [(shapes.get(x) or (None, 0))[0] for x in cat.input]
        chans = [d[1] if d and len(d) == len(w.dims) else None for d in chans]
        if any(c is None or c <= 0 or x in inits for c, x in zip(chans, cat.input)) or sum(chans) != w.dims[1]:
            new_nodes.append(node)
            continue
        weight = numpy_helper.to_array(w, base_dir=str(base_dir) if base_dir else "")
        meta = [(p.key, p.value) for p in node.metadata_props]
        attrs = list(node.attribute)
        partials, start = [], 0
        for k, (x, c) in enumerate(zip(cat.input, chans)):
            wname = unique_name(f"{w.name}__part{k}", used)
            g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight[:, start:start + c]), wname))
            start += c
            ins = [x, wname] + ([node.input[2]] if k == 0 and len(node.input) > 2 and node.input[2] else [])
            out = unique_name(f"{node.output[0]}__part{k}", used)
            conv = helper.make_node("Conv", ins, [out], name=unique_name(f"{node.name}__part{k}", used))
            conv.attribute.extend(attrs)
            partials.append(conv)
        total = partials[0].output[0]
        for k, conv in enumerate(partials[1:], start=1):
            last = k == len(partials) - 1
            out = node.output[0] if last else unique_name(f"{node.output[0]}__sum{k}", used)
            add = helper.make_node("Add", [total, conv.output[0]], [out],
                                   name=unique_name(f"{node.name}__sum{k}", used))
            partials.append(add)
            total = out
        for new in partials:
            for key, value in meta:
                new.metadata_props.add(key=key, value=value)
            if new.output[0] != node.output[0]:
                new.metadata_props.add(key=PARTIAL_SUM_KEY, value="1")
        new_nodes.extend(partials)
        dropped_inits.add(w.name)
        readers[cat.output[0]] -= 1
        if readers[cat.output[0]] == 0 and cat.output[0] not in {o.name for o in g.output}:
            dead.add(cat.output[0])
        count += 1
    if not count:
        return 0
    del g.node[:]
    g.node.extend(n for n in new_nodes if not (n.op_type == "Concat" and n.output[0] in dead))
    kept = [t for t in g.initializer if t.name not in dropped_inits]
    del g.initializer[:]
    g.initializer.extend(kept)
    return count


def split_concat_convs_file(path: str | Path) -> int:
    """:func:`split_concat_convs` on the graph at ``path`` (other weights stay in its external data file)."""
    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    n = split_concat_convs(model, path.parent)
    if n:
        onnx.save(model, str(path))
    return n
