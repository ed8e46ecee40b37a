"""Find the quantizable layers of an exported ONNX graph.

A *layer* is what a policy assigns a precision to: one PyTorch-level op (an FX node recorded by the dynamo exporter
in each ONNX node's metadata), so that SiLU (Sigmoid*Mul) or a Linear (MatMul+Add) is one unit and only its
boundary tensors are quantized. Fused attention (scaled_dot_product_attention) is split back into its MatMul,
Softmax and MatMul so the softmax can take its own precision. Pure data-movement ops are *passthrough*.

An additive constant in front of a softmax (the causal mask of a text encoder: 0 where a token may attend,
float32's most negative value where it may not) is part of the softmax layer, as in the masked-softmax kernels of
NPUs: the logits are quantized before the mask is added, so the mask's sentinel never sets a quantization range
(with it, min/max ranges span 3.4e38 and an integer text encoder loses all fidelity).
"""

from __future__ import annotations

import ast
import re
from dataclasses import asdict, dataclass
from functools import lru_cache

import onnx

# Ops that only move or reinterpret data: they never get a precision of their own.
PASSTHROUGH_OPS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Slice", "Split",
                   "Expand", "Cast", "Shape", "Constant", "ConstantOfShape", "Range", "Size"}
HEAVY_OPS = {"Conv", "MatMul", "Gemm", "Softmax"}
ATEN_TO_LAYER = {"silu": "SiLU", "group_norm": "GroupNorm", "native_group_norm": "GroupNorm",
                 "layer_norm": "LayerNorm", "native_layer_norm": "LayerNorm", "gelu": "GELU",
                 "softmax": "Softmax", "_softmax": "Softmax", "conv2d": "Conv", "convolution": "Conv"}
ONNX_TO_LAYER = {"LayerNormalization": "LayerNorm", "GroupNormalization": "GroupNorm", "Gelu": "GELU"}
# op types a policy may name besides raw ONNX op types
LOGICAL_OP_TYPES = {"Conv", "MatMul", "Gemm", "Softmax", "SiLU", "GroupNorm", "LayerNorm", "GELU"}
WRAPPER_ATTRS = ("unet.", "te.", "vae.")


@dataclass
class Layer:
    """One precision-assignable unit of a graph."""

    name: str  # "<component>/<module path>/<op name>"
    op_type: str  # Conv, MatMul, Gemm, Softmax, SiLU, GroupNorm, LayerNorm, GELU, or an ONNX op type
    nodes: list[str]  # ONNX node names
    passthrough: bool = False

    def to_dict(self) -> dict:
        """Plain-dict form for JSON."""
        return asdict(self)


@lru_cache(maxsize=1)
def known_op_types() -> frozenset[str]:
    """Every op type a policy may name: the logical layer types plus all ONNX operator names."""
    return frozenset(LOGICAL_OP_TYPES | {s.name for s in onnx.defs.get_all_schemas()})


def _meta(node: onnx.NodeProto) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def _aten_target(fx_node: str) -> str | None:
    m = re.search(r"target=torch\.ops\.aten\.([A-Za-z0-9_]+)", fx_node)
    return m.group(1) if m else None


def _module_path(scopes: list[str]) -> str:
    path = scopes[-2] if len(scopes) >= 2 else ""
    for prefix in WRAPPER_ATTRS:
        if path.startswith(prefix):
            return path[len(prefix):]
    return "" if path in ("unet", "te", "vae") else path


def find_layers(model: onnx.ModelProto, component: str) -> list[Layer]:
    """Group the graph's nodes into layers, in graph order, with unique names."""
    groups: dict[str, list[onnx.NodeProto]] = {}
    info: dict[str, tuple[str, str, str | None]] = {}  # key -> (module path, op name, aten target)
    for i, node in enumerate(model.graph.node):
        md = _meta(node)
        fx = md.get("pkg.torch.onnx.fx_node")
        key = fx if fx else f"__node{i}"
        if key not in groups:
            scopes = ast.literal_eval(md["pkg.torch.onnx.name_scopes"]) if "pkg.torch.onnx.name_scopes" in md else []
            op_name = scopes[-1] if scopes else (node.name or f"{node.op_type}_{i}")
            info[key] = (_module_path(scopes), op_name, _aten_target(fx) if fx else None)
            groups[key] = []
        groups[key].append(node)

    layers: list[Layer] = []
    for key, nodes in groups.items():
        module, op_name, aten = info[key]
        prefix = f"{component}/{module}/{op_name}" if module else f"{component}/{op_name}"
        compute = [n for n in nodes if n.op_type not in PASSTHROUGH_OPS]
        heavy = [n for n in compute if n.op_type in HEAVY_OPS]
        # fused attention and friends: one layer per compute node (a convolution split over a concatenation's
        # inputs, edgefusion.graph.split_concat_convs, stays one layer)
        if len(heavy) > 1 and any(n.op_type != "Conv" for n in heavy):
            counts: dict[str, int] = {}
            for n in nodes:
                if n.op_type in PASSTHROUGH_OPS:
                    layers.append(Layer(f"{prefix}.{n.op_type}{counts.setdefault(n.op_type, 0)}", n.op_type,
                                        [n.name], True))
                else:
                    layers.append(Layer(f"{prefix}.{n.op_type}{counts.get(n.op_type, 0)}",
                                        ONNX_TO_LAYER.get(n.op_type, n.op_type), [n.name]))
                counts[n.op_type] = counts.get(n.op_type, 0) + 1
            continue
        if not compute:
            layers.append(Layer(prefix, nodes[0].op_type, [n.name for n in nodes], True))
            continue
        if aten in ATEN_TO_LAYER:
            op_type = ATEN_TO_LAYER[aten]
        elif heavy:
            op_type = heavy[0].op_type
        else:
            op_type = ONNX_TO_LAYER.get(compute[0].op_type, compute[0].op_type)
        layers.append(Layer(prefix, op_type, [n.name for n in nodes]))

    _merge_softmax_masks(model, layers)
    seen: dict[str, int] = {}
    for layer in layers:  # names must be unique for exact-name policy rules
        if layer.name in seen:
            seen[layer.name] += 1
            layer.name = f"{layer.name}#{seen[layer.name]}"
        else:
            seen[layer.name] = 0
    return layers


def _merge_softmax_masks(model: onnx.ModelProto, layers: list[Layer]) -> None:
    """Fold ``Add(logits, constant) -> Softmax`` into the softmax layer (the Add's own layer disappears)."""
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    layer_of = {n: layer for layer in layers for n in layer.nodes}
    for layer in list(layers):
        if layer.op_type != "Softmax":
            continue
        soft = next(n for n in model.graph.node if n.name in layer.nodes and n.op_type == "Softmax")
        add = producer.get(soft.input[0])
        if (add is None or add.op_type != "Add" or readers.get(add.output[0]) != 1
                or sum(i in constants for i in add.input) != 1):
            continue
        owner = layer_of[add.name]
        if owner is layer:
            continue
        if owner.nodes != [add.name]:  # the Add shares its layer with other compute: leave the grouping alone
            continue
        layers.remove(owner)
        layer.nodes.insert(0, add.name)
        layer_of[add.name] = layer


def ensure_node_names(model: onnx.ModelProto) -> None:
    """Give every unnamed node a unique name (layers refer to nodes by name)."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
