"""The NPU's view of an ONNX graph: compute ops with MACs, element counts, precisions and tensor sizes.

Simulation artefacts are removed: QuantizeLinear/DequantizeLinear pairs and fp16 ``Cast`` pairs become the storage
type of the tensor they wrap (int8, int16, fp16); weights are counted at their stored width (int8 per-channel,
fp16, fp32, int32 biases behind a DequantizeLinear). Reshapes/transposes are free aliases (layout is the
compiler's business); constant-only subgraphs and shape arithmetic are folded away; Concat/Split/Slice are *views*
(no compute: the producer writes into, the consumer reads from, a slot of one buffer). Two sources give the same
view: an exported (QDQ) graph, or a float graph plus the :class:`~edgefusion.quant.plan.QuantPlan` the exporter
would follow (used for weight-free skeleton graphs). Float graph inputs are taken in fp16 (the host converts them
when it calls the NPU). Which engine, or the host CPU, runs an op is the device's business
(:mod:`edgefusion.latency`); this module only says what the op is.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field

import onnx

from edgefusion.graph.shapes import ELEM_KIND, KIND_BYTES, numel as _numel_of, tensor_shapes

KIND_RANK = {"int8": 0, "int16": 1, "fp16": 2, "fp32": 3}
KIND_PRECISION = {"int8": "W8A8", "int16": "W8A16", "fp16": "FP16", "fp32": "FP32"}
PRECISION_WEIGHT_BYTES = {"W8A8": 1, "W8A16": 1, "FP16": 2}  # weights of a tensor op at its precision
TILE_KEY = "edgefusion.tile"  # node metadata: index of the tile iteration a node belongs to (attention tiling)

FREE_OPS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Cast", "Dropout"}
SHAPE_OPS = {"Shape", "Size", "ConstantOfShape", "Range", "Constant"}
TENSOR_OPS = {"Conv": "Conv", "MatMul": "MatMul", "Gemm": "Gemm", "ConvTranspose": "Conv"}
VECTOR_OPS = {"Softmax": "Softmax", "GroupNormalization": "GroupNorm", "LayerNormalization": "LayerNorm",
              "Sigmoid": "SiLU", "Gelu": "GELU", "InstanceNormalization": "GroupNorm"}
DMA_OPS = {"Gather", "Expand", "Pad", "Resize", "Tile"}
VIEW_OPS = {"Concat", "Split", "Slice", "SequenceAt", "SplitToSequence"}
FUSABLE = {"Add", "Sub", "Mul", "Div", "Sigmoid", "Gelu", "Tanh", "Erf", "Relu", "Sqrt", "Exp", "Neg", "Pow",
           "Clip", "Max", "Min", "Where", "Reciprocal"}


@dataclass
class Op:
    """One compute op as the NPU runs it."""

    name: str
    op_type: str
    category: str  # Conv/MatMul/Gemm/Softmax/GroupNorm/LayerNorm/SiLU/GELU/_elementwise/_data/_view
    engine: str  # tensor_engine | vector_engine | view (no compute)
    precision: str  # W8A8 | W8A16 | FP16 | FP32 (as the graph stores it)
    macs: int
    elements: int  # output elements (vector-engine work)
    inputs: list[str]  # activation tensors (logical names)
    outputs: list[str]
    weight_bytes: int
    block: str
    fusable: bool = False
    tile: int = -1  # iteration of a tiled attention (0 = first tile), -1 when not a tile


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


def block_of(node: onnx.NodeProto) -> str:
    """The model block a node belongs to (``down_blocks.1.attentions.0``), from the exporter's name scopes."""
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


def tile_of(node: onnx.NodeProto) -> int:
    """The tile iteration the attention tiler marked ``node`` with, -1 when none."""
    for p in node.metadata_props:
        if p.key == TILE_KEY:
            try:
                return int(p.value)
            except ValueError:
                return -1
    return -1


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _widest(kinds: list[str]) -> str:
    ks = [k for k in kinds if k in KIND_RANK]
    return max(ks, key=KIND_RANK.__getitem__) if ks else "fp32"


def _macs(node: onnx.NodeProto, shapes, out_n: int) -> int:
    if node.op_type in ("Conv", "ConvTranspose"):
        w = shapes.get(node.input[1], (None, 0))[0] or []
        return out_n * (math.prod(w[1:]) if len(w) > 1 and None not in w[1:] else 1)
    a = shapes.get(node.input[0], (None, 0))[0] or [1]
    k = a[-1] if node.op_type == "MatMul" else (a[0] if _attr(node, "transA", 0) else a[-1])
    return out_n * (k or 1)


def build_op_graph(model: onnx.ModelProto, component: str, plan=None) -> OpGraph:
    """The NPU view of ``model``. With ``plan`` (a QuantPlan for a float graph) storage types come from the plan;
    without it they are read from the graph's QuantizeLinear/DequantizeLinear/Cast nodes."""
    g = model.graph
    shapes = tensor_shapes(model)
    inits = {t.name for t in g.initializer}
    graph_inputs = [i.name for i in g.input if i.name not in inits]

    const: set[str] = set(inits)
    root: dict[str, str] = {}  # activation tensor -> logical tensor it aliases
    kind: dict[str, str] = {}  # logical tensor -> storage kind
    const_elem_bytes: dict[str, float] = {t.name: KIND_BYTES.get(ELEM_KIND.get(t.data_type, "fp32"), 4)
                                          for t in g.initializer}
    for name in graph_inputs:  # the host hands the NPU its float inputs in fp16 (the NPU has no fp32)
        root[name] = name
        kind[name] = ELEM_KIND.get(shapes.get(name, (None, 1))[1], "fp32")
        if kind[name] == "fp32":
            kind[name] = "fp16"
    if plan is not None:
        for t, bits in plan.act_bits.items():
            kind[t] = "int8" if bits == 8 else "int16"
        for t in plan.fp16_tensors:
            kind.setdefault(t, "fp16")
        for w in plan.int8_weights:
            const_elem_bytes[w] = 1
        for w in plan.fp16_weights:
            const_elem_bytes[w] = 2
        for w, bits in plan.const_bits.items():  # uint8/uint16 constants (a norm's scale)
            const_elem_bytes[w] = bits // 8

    def numel(t: str) -> int:
        return _numel_of(shapes.get(t, (None, 0))[0]) or 0

    def fold(node: onnx.NodeProto) -> None:  # constant-only: folded by the compiler
        src = [const_elem_bytes[i] for i in node.input if i in const_elem_bytes]
        for o in node.output:
            const.add(o)
            if node.op_type == "DequantizeLinear" and node.input[0] in const_elem_bytes:
                const_elem_bytes[o] = const_elem_bytes[node.input[0]]  # int8 weights, int32 biases
            elif src:
                const_elem_bytes[o] = src[0] if node.op_type != "Cast" else min(src[0], KIND_BYTES.get(
                    ELEM_KIND.get(_attr(node, "to", 1), "fp32"), 4))

    ops: list[Op] = []
    unsupported = 0
    for node in g.node:
        op = node.op_type
        data_inputs = node.input[:1] if op == "CastLike" else node.input  # CastLike's 2nd input is a type only
        acts = [i for i in data_inputs if i and i not in const and i in root]
        if not acts or op in SHAPE_OPS:  # constant-only or shape arithmetic
            fold(node)
            continue
        if op == "QuantizeLinear":
            r = root[node.input[0]]
            q_kind = ELEM_KIND.get(shapes.get(node.output[0], (None, onnx.TensorProto.UINT8))[1], "int8")
            if len(node.input) > 2 and node.input[2] in shapes:
                q_kind = ELEM_KIND.get(shapes[node.input[2]][1], q_kind)
            kind[r] = q_kind if q_kind in ("int8", "int16") else "int8"
            root[node.output[0]] = r
            continue
        if op == "DequantizeLinear":
            root[node.output[0]] = root[node.input[0]]
            continue
        if op in ("Cast", "CastLike"):
            r = root[acts[0]]
            to = ELEM_KIND.get(_attr(node, "to", 1), "fp32") if op == "Cast" else kind.get(r, "fp32")
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
        act_kind = _widest([kind.get(r, ELEM_KIND.get(shapes.get(r, (None, 1))[1], "fp32")) for r in in_roots])
        outs = [o for o in node.output if o]
        for o in outs:
            root[o] = o
            kind.setdefault(o, act_kind)
        weights = [i for i in node.input if i in const and numel(i) >= 64]  # skip scalars and shape vectors
        weight_bytes = sum(int(numel(i) * const_elem_bytes.get(i, 4)) for i in weights)
        macs = 0
        precision = KIND_PRECISION[act_kind]
        if op in TENSOR_OPS:
            engine, category = "tensor_engine", TENSOR_OPS[op]
            macs = _macs(node, shapes, numel(outs[0]))
            if plan is not None:  # weights take the layer's precision (the plan may not see through a transpose)
                bias = set(node.input[2:3]) if op in ("Conv", "Gemm", "ConvTranspose") else set()
                weight_bytes = sum(numel(i) * (4 if i in bias and precision != "FP16" else 2 if i in bias else
                                               PRECISION_WEIGHT_BYTES.get(precision, 4)) for i in weights)
            elif weights and min(const_elem_bytes.get(i, 4) for i in weights) >= 2 and act_kind in ("int8", "int16"):
                precision = "FP16"  # float weights force a float kernel
        elif op in VIEW_OPS:
            engine, category = "view", "_view"
        else:
            engine = "vector_engine"
            category = VECTOR_OPS.get(op, "_data" if op in DMA_OPS else "_elementwise")
            if op == "Gather" and node.input[0] in const:  # an embedding lookup reads only the rows it gathers
                weight_bytes = int(sum(numel(o) for o in outs) * const_elem_bytes.get(node.input[0], 4))
        if precision == "FP32":
            unsupported += 1
        elements = sum(numel(o) for o in outs)
        ops.append(Op(name=node.name or f"{op}_{len(ops)}", op_type=op, category=category, engine=engine,
                      precision=precision, macs=int(macs), elements=int(elements), inputs=in_roots, outputs=outs,
                      weight_bytes=int(weight_bytes), block=block_of(node), fusable=op in FUSABLE,
                      tile=tile_of(node)))

    tensor_bytes: dict[str, int] = {}
    for name in list(graph_inputs) + [o for op in ops for o in op.outputs]:
        tensor_bytes[name] = int(numel(name) * KIND_BYTES.get(kind.get(name, "fp32"), 4))
    outputs = [root.get(o.name, o.name) for o in g.output]
    notes = []
    if unsupported:
        notes.append(f"{component}: {unsupported} ops keep FP32 (the NPU has no FP32: they run on the host CPU)")
    return OpGraph(component, ops, tensor_bytes, graph_inputs, outputs, notes)
