"""The NPU's view of an ONNX graph: compute ops with MACs, element counts, precisions and tensor sizes.

Simulation artefacts are removed: QuantizeLinear/DequantizeLinear pairs and fp16 ``Cast`` pairs become the storage
type of the tensor they wrap (int8, int16, fp16), weights are counted at their stored width (int8 per-channel,
fp16, fp32). Reshapes/transposes are free aliases (layout is the compiler's business); constant-only subgraphs are
folded away. Two sources give the same view: an exported (QDQ) graph, or a float graph plus the
:class:`~edgefusion.quant.plan.QuantPlan` the exporter would follow (used for weight-free skeleton graphs).
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field

import onnx

from edgefusion.quant.shape_inference import infer_weight_free

KIND_BYTES = {"int8": 1, "int16": 2, "fp16": 2, "fp32": 4, "int64": 8, "int32": 4, "bool": 1}
KIND_RANK = {"int8": 0, "int16": 1, "fp16": 2, "fp32": 3}
KIND_PRECISION = {"int8": "W8A8", "int16": "W8A16", "fp16": "FP16", "fp32": "FP32"}
ELEM_KIND = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.INT8: "int8",
             onnx.TensorProto.UINT8: "int8", onnx.TensorProto.INT16: "int16", onnx.TensorProto.UINT16: "int16",
             onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32", onnx.TensorProto.BOOL: "bool",
             onnx.TensorProto.DOUBLE: "int64"}

FREE_OPS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "SplitToSequence", "CastLike",
            "Cast", "Dropout"}
SHAPE_OPS = {"Shape", "Size", "ConstantOfShape", "Range", "Constant"}
TENSOR_OPS = {"Conv": "Conv", "MatMul": "MatMul", "Gemm": "Gemm", "ConvTranspose": "Conv"}
VECTOR_OPS = {"Softmax": "Softmax", "GroupNormalization": "GroupNorm", "LayerNormalization": "LayerNorm",
              "Sigmoid": "SiLU", "Gelu": "GELU", "InstanceNormalization": "GroupNorm"}
DMA_OPS = {"Concat", "Split", "Slice", "Gather", "SequenceAt", "Expand", "Pad", "Resize", "Tile"}
FUSABLE = {"Add", "Sub", "Mul", "Div", "Sigmoid", "Gelu", "Tanh", "Erf", "Relu", "Sqrt", "Exp", "Neg", "Pow",
           "Clip", "Max", "Min", "Where", "Reciprocal"}


@dataclass
class Op:
    """One compute op as the NPU runs it."""

    name: str
    op_type: str
    category: str  # Conv/MatMul/Gemm/Softmax/GroupNorm/LayerNorm/SiLU/GELU/_elementwise/_data
    engine: str  # tensor_engine | vector_engine
    precision: str  # W8A8 | W8A16 | FP16 | FP32 (as the graph stores it)
    macs: int
    elements: int  # output elements (vector-engine work)
    inputs: list[str]  # activation tensors (logical names)
    outputs: list[str]
    weight_bytes: int
    block: str
    fusable: bool = False


@dataclass
class OpGraph:
    """Compute ops in execution order and the size of every logical activation tensor."""

    component: str
    ops: list[Op]
    tensor_bytes: dict[str, int]
    graph_inputs: list[str]
    graph_outputs: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def weight_bytes(self) -> int:
        """Bytes of all weights at their stored width."""
        return sum(o.weight_bytes for o in self.ops)


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[list[int | None], int]]:
    """Shape and element type of every tensor (shape inference on a weight-free copy)."""
    inferred = infer_weight_free(model, data_prop=True)
    out: dict[str, tuple[list[int | None], int]] = {}
    g = inferred.graph
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        if vi.type.HasField("tensor_type"):
            tt = vi.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim] \
                if tt.HasField("shape") else None
            out[vi.name] = (dims, tt.elem_type)
    for t in model.graph.initializer:
        out[t.name] = (list(t.dims), t.data_type)
    return out


def _numel(dims) -> int | None:
    if dims is None or any(d is None for d in dims):
        return None
    return math.prod(dims) if dims else 1


def _block(node: onnx.NodeProto) -> str:
    md = {p.key: p.value for p in node.metadata_props}
    scopes = md.get("pkg.torch.onnx.name_scopes")
    if not scopes:
        return ""
    try:
        names = ast.literal_eval(scopes)
    except (ValueError, SyntaxError):
        return ""
    path = names[-2] if len(names) >= 2 else ""
    for prefix in ("unet.", "te.", "vae."):
        if path.startswith(prefix):
            path = path[len(prefix):]
    parts = path.split(".")
    # down_blocks.1.attentions.0.transformer_blocks.0.attn1 -> down_blocks.1.attentions.0
    return ".".join(parts[:4]) if parts and parts[0].endswith("blocks") else ".".join(parts[:2])


def build_op_graph(model: onnx.ModelProto, component: str, plan=None) -> OpGraph:
    """The NPU view of ``model``. With ``plan`` (a QuantPlan for a float graph) storage types come from the plan;
    without it they are read from the graph's QuantizeLinear/DequantizeLinear/Cast nodes."""
    g = model.graph
    shapes = _shapes(model)
    inits = {t.name for t in g.initializer}
    producer: dict[str, onnx.NodeProto] = {}
    for n in g.node:
        for o in n.output:
            producer[o] = n
    graph_inputs = [i.name for i in g.input if i.name not in inits]

    const: set[str] = set(inits)
    root: dict[str, str] = {}  # activation tensor -> logical tensor it aliases
    kind: dict[str, str] = {}  # logical tensor -> storage kind
    const_elem_bytes: dict[str, float] = {t.name: KIND_BYTES.get(ELEM_KIND.get(t.data_type, "fp32"), 4)
                                          for t in g.initializer}
    for name in graph_inputs:
        root[name] = name
        kind[name] = ELEM_KIND.get(shapes.get(name, (None, 1))[1], "fp32")
    if plan is not None:
        for t, bits in plan.act_bits.items():
            kind[t] = "int8" if bits == 8 else "int16"
        for t in plan.fp16_tensors:
            kind.setdefault(t, "fp16")
        for w in plan.int8_weights:
            const_elem_bytes[w] = 1
        for w in plan.fp16_weights:
            const_elem_bytes[w] = 2

    def numel(t: str) -> int:
        return _numel(shapes.get(t, (None, 0))[0]) or 0

    def attr(node, name, default):
        for a in node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    def widest(kinds: list[str]) -> str:
        ks = [k for k in kinds if k in KIND_RANK]
        return max(ks, key=KIND_RANK.__getitem__) if ks else "fp32"

    ops: list[Op] = []
    unsupported = 0
    for node in g.node:
        acts = [i for i in node.input if i and i not in const and i in root]
        if not acts:  # constant-only (folded by the compiler) or shape arithmetic
            for o in node.output:
                const.add(o)
                src = [const_elem_bytes[i] for i in node.input if i in const_elem_bytes]
                if node.op_type == "DequantizeLinear" and node.input[0] in const_elem_bytes:
                    const_elem_bytes[o] = const_elem_bytes[node.input[0]]
                elif src:
                    const_elem_bytes[o] = src[0] if node.op_type != "Cast" else min(src[0], KIND_BYTES.get(
                        ELEM_KIND.get(attr(node, "to", 1), "fp32"), 4))
            continue
        op = node.op_type
        if op == "QuantizeLinear":
            r = root[node.input[0]]
            q_kind = ELEM_KIND.get(shapes.get(node.output[0], (None, onnx.TensorProto.UINT8))[1], "int8")
            if len(node.input) > 2 and node.input[2] in shapes:
                q_kind = ELEM_KIND.get(shapes[node.input[2]][1], q_kind)
            kind[r] = q_kind if q_kind in ("int8", "int16") else "int8"
            root[node.output[0]] = r
            continue
        if op == "DequantizeLinear" or op in SHAPE_OPS:
            for o in node.output:
                if op in SHAPE_OPS:
                    const.add(o)
                else:
                    root[o] = root[node.input[0]]
            continue
        if op == "Cast":
            r = root[node.input[0]]
            to = ELEM_KIND.get(attr(node, "to", 1), "fp32")
            if to == "fp16" and plan is None:
                kind[r] = "fp16"  # the first Cast of an fp16 rounding pair
            if to in KIND_RANK:
                root[node.output[0]] = r
            else:
                const.add(node.output[0])
            continue
        if op in FREE_OPS:
            for o in node.output:
                root[o] = root[acts[0]]
            continue
        in_roots = list(dict.fromkeys(root[a] for a in acts))
        act_kind = widest([kind.get(r, ELEM_KIND.get(shapes.get(r, (None, 1))[1], "fp32")) for r in in_roots])
        outs = [o for o in node.output if o]
        for o in outs:
            root[o] = o
            kind.setdefault(o, act_kind)
        weights = [i for i in node.input if i in const and numel(i) >= 64]  # skip scalars and shape vectors
        weight_bytes = sum(int(numel(i) * const_elem_bytes.get(i, 4)) for i in weights)
        if op in TENSOR_OPS:
            engine, category = "tensor_engine", TENSOR_OPS[op]
            out_n = numel(outs[0])
            if op in ("Conv", "ConvTranspose"):
                w = shapes.get(node.input[1], (None, 0))[0] or []
                macs = out_n * (math.prod(w[1:]) if len(w) > 1 else 1)
            else:
                a = shapes.get(node.input[0], (None, 0))[0] or [1]
                k = a[-1] if op == "MatMul" else (a[0] if attr(node, "transA", 0) else a[-1])
                macs = out_n * (k or 1)
            precision = KIND_PRECISION[act_kind]
            if plan is not None:  # weights take the layer's precision (the plan may not see through a transpose)
                weight_bytes = sum(numel(i) * {"W8A8": 1, "W8A16": 1, "FP16": 2}.get(precision, 4) for i in weights)
            elif weights and min(const_elem_bytes.get(i, 4) for i in weights) >= 2 and act_kind in ("int8", "int16"):
                precision = "FP16"  # float weights force a float kernel
        else:
            engine = "vector_engine"
            category = VECTOR_OPS.get(op, "_data" if op in DMA_OPS else "_elementwise")
            macs = 0
            precision = KIND_PRECISION[act_kind]
        if precision == "FP32":
            unsupported += 1
        elements = sum(numel(o) for o in outs)
        ops.append(Op(name=node.name or f"{op}_{len(ops)}", op_type=op, category=category, engine=engine,
                      precision=precision, macs=int(macs), elements=int(elements), inputs=in_roots, outputs=outs,
                      weight_bytes=weight_bytes, block=_block(node), fusable=op in FUSABLE))

    tensor_bytes: dict[str, int] = {}
    for name in list(graph_inputs) + [o for op in ops for o in op.outputs]:
        tensor_bytes[name] = int(numel(name) * KIND_BYTES.get(kind.get(name, "fp32"), 4))
    outputs = [root.get(o.name, o.name) for o in g.output]
    notes = []
    if unsupported:
        notes.append(f"{component}: {unsupported} ops keep FP32 (costed at the device's slowest precision)")
    return OpGraph(component, ops, tensor_bytes, graph_inputs, outputs, notes)
