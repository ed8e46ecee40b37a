"""The HTP's copy of an exported graph, without the FP16 simulation.

An FP16 layer is simulated on the CPU in float32 with ``Cast(fp16) -> Cast(fp32)`` rounding pairs on its outputs
and float16 weights behind a ``Cast`` (``edgefusion.quant.emit``). Qualcomm's HTP computes float layers in fp16
anyway (``enable_htp_fp16_precision``), so there the pairs are only extra ops: the compiled embedded text encoder
kept 82 Cast ops of 156, the VAE decoder 236 of 421, the `default` UNet 34. The QNN step compiles this copy
instead: the rounding pairs and weight casts removed and, for a graph with no integer tensor, every tensor float16
(onnxruntime's float16 converter), graph inputs and outputs float32 as before. A graph with quantized tensors keeps
float32 declarations (its float islands sit between DequantizeLinear and QuantizeLinear, whose float32 side a
float16 island would need Casts for); the HTP runs them in fp16 all the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from edgefusion.graph.naming import node_attr


def is_float_graph(model: onnx.ModelProto) -> bool:
    """Whether ``model`` quantizes nothing (no QuantizeLinear node)."""
    return not any(n.op_type == "QuantizeLinear" for n in model.graph.node)


def strip_fp16_simulation(model: onnx.ModelProto, base_dir: str | Path = "") -> int:
    """Remove, in place, the ``Cast`` rounding pairs and float16 weight casts of the FP16 simulation (weights back
    in float32, exactly); returns the Cast nodes removed."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}
    rename: dict[str, str] = {}
    drop: set[int] = set()
    for n in g.node:
        to = node_attr(n, "to", None) if n.op_type == "Cast" else None
        if to == TensorProto.FLOAT and n.input[0] in producer and producer[n.input[0]].op_type == "Cast":
            first = producer[n.input[0]]
            if node_attr(first, "to", None) != TensorProto.FLOAT16:
                continue
            if n.output[0] in outputs:  # a graph output keeps its name: its producer writes it directly
                src = producer.get(first.input[0])
                if src is None:
                    continue
                src.output[list(src.output).index(first.input[0])] = n.output[0]
                rename[first.input[0]] = n.output[0]
            else:
                rename[n.output[0]] = first.input[0]
            drop |= {id(n), id(first)}
        elif to == TensorProto.FLOAT and n.input[0] in inits and inits[n.input[0]].data_type == TensorProto.FLOAT16:
            value = numpy_helper.to_array(inits[n.input[0]], base_dir=str(base_dir)).astype(np.float32)
            g.initializer.append(numpy_helper.from_array(value, n.output[0]))
            drop.add(id(n))
    keep = [n for n in g.node if id(n) not in drop]
    for n in keep:
        for i, x in enumerate(n.input):
            while x in rename:
                x = rename[x]
            n.input[i] = x
    del g.node[:]
    g.node.extend(keep)
    used = {x for n in keep for x in n.input}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    del g.value_info[:]
    return len(drop)


def has_fp16_simulation(model: onnx.ModelProto) -> bool:
    """Whether ``model`` has a rounding pair or a float16 weight cast for :func:`strip_fp16_simulation` to remove
    (structure only: no weights need to be loaded)."""
    g = model.graph
    fp16_inits = {t.name for t in g.initializer if t.data_type == TensorProto.FLOAT16}
    to_fp16 = {n.output[0] for n in g.node if n.op_type == "Cast" and node_attr(n, "to", None) == TensorProto.FLOAT16}
    return any(n.op_type == "Cast" and node_attr(n, "to", None) == TensorProto.FLOAT and (n.input[0] in to_fp16 or
                                                                               n.input[0] in fp16_inits)
               for n in g.node)



def htp_copy_file(src: str | Path, dst: str | Path) -> dict:
    """Write the HTP's copy of the graph at ``src`` to ``dst`` (weights inline, or beside ``dst`` when large);
    returns ``htp_form`` (``float16``: a float graph, all float16 inside; ``fp16 rounding removed``: a quantized
    graph) and ``cast_nodes_removed``."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from edgefusion.export.deploy_form import write_intermediate_shapes

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    float16 = is_float_graph(model)
    removed = strip_fp16_simulation(model, src.parent)
    if float16:
        model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
    write_intermediate_shapes(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    big = sum(t.ByteSize() for t in model.graph.initializer) > (1 << 30)
    onnx.save_model(model, str(dst), save_as_external_data=big, all_tensors_to_one_file=True,
                    location=dst.name + ".data")
    return {"htp_form": "float16" if float16 else "fp16 rounding removed", "cast_nodes_removed": removed}
