"""Run an exported float ONNX graph with PyTorch, node by node, on the graph's own tensor names.

Why not onnxruntime: the profiler needs (a) a fake-quantized variant of the graph per candidate without writing and
compiling a new ONNX file each time, (b) many samples stacked on the batch dimension of a batch-1 export, and
(c) gradients of the output with respect to every intermediate tensor (one backward pass for all layers). Because the
interpreter walks the very graph the exporter quantizes, the tensors it fake-quantizes are exactly the tensors
``quant/plan.py`` puts QDQ nodes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.external_data_helper import load_external_data_for_tensor

from edgefusion.errors import EdgeFusionError


class NotBatchable(Exception):
    """The graph moves or mixes its leading dimension, so stacked samples would not stay independent."""


@dataclass
class GraphNode:
    """One ONNX node, pre-parsed."""

    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict


def _tensor_array(t: onnx.TensorProto, base: Path) -> np.ndarray:
    if t.data_location == onnx.TensorProto.EXTERNAL:
        t2 = onnx.TensorProto()
        t2.CopyFrom(t)
        load_external_data_for_tensor(t2, str(base))
        t2.data_location = onnx.TensorProto.DEFAULT
        del t2.external_data[:]
        return numpy_helper.to_array(t2)
    return numpy_helper.to_array(t)


class TorchGraph:
    """A float ONNX graph executed by PyTorch; tensors can be transformed (fake-quantized) as they are produced."""

    def __init__(self, path: str | Path):
        import torch

        from edgefusion.sensitivity.onnx_ops import OPS

        path = Path(path)
        model = onnx.load(str(path), load_external_data=False)
        g = model.graph
        self.path = path
        self.weights: dict[str, torch.Tensor] = {}  # float initializers
        self.consts: dict[str, np.ndarray] = {}  # integer initializers (shapes, axes)
        for t in g.initializer:
            arr = _tensor_array(t, path.parent)
            if arr.dtype.kind == "f":
                self.weights[t.name] = torch.from_numpy(np.array(arr, dtype=np.float32))
            else:
                self.consts[t.name] = arr
        self.input_names = [i.name for i in g.input if i.name not in self.weights and i.name not in self.consts]
        self.output_names = [o.name for o in g.output]
        self.nodes: list[GraphNode] = []
        for n in g.node:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            if n.op_type == "Constant":
                arr = numpy_helper.to_array(attrs["value"])
                if arr.dtype.kind == "f":
                    self.weights[n.output[0]] = torch.from_numpy(np.array(arr, dtype=np.float32))
                else:
                    self.consts[n.output[0]] = arr
                continue
            if n.op_type not in OPS:
                raise EdgeFusionError(f"the profiler cannot run ONNX op '{n.op_type}' (node '{n.name}')",
                                      "profile a Stable Diffusion UNet exported by edgefusion, or add the op to "
                                      "edgefusion/sensitivity/onnx_ops.py")
            self.nodes.append(GraphNode(n.name, n.op_type, list(n.input), list(n.output), attrs))
        self.last_use: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            for x in n.inputs:
                self.last_use[x] = i
        self.node_index = {n.name: i for i, n in enumerate(self.nodes)}
        self.producer = {o: n for n in self.nodes for o in n.outputs}

    def weights_digest(self) -> str:
        """Content hash of the float weights, independent of tensor names and of the export resolution."""
        import hashlib

        parts = sorted(hashlib.sha256(w.numpy().tobytes()).hexdigest() + str(tuple(w.shape))
                       for w in self.weights.values() if w.numel() > 1)
        return hashlib.sha256("".join(parts).encode()).hexdigest()[:16]

    def value(self, name: str, env: dict, weights: dict | None = None):
        """The current value of tensor ``name``: activation, (overridden) weight or integer constant."""
        if name in env:
            return env[name]
        if weights and name in weights:
            return weights[name]
        if name in self.weights:
            return self.weights[name]
        if name in self.consts:
            return self.consts[name]
        if name == "":
            return None
        raise KeyError(name)

    def run_node(self, node: GraphNode, env: dict, batch: int, weights: dict | None = None,
                 replace: dict | None = None) -> list:
        """Evaluate one node (``replace`` substitutes some of its inputs); returns its outputs as a list."""
        from edgefusion.sensitivity.onnx_ops import BATCH_AXIS_ATTR, OPS

        ins = [replace[x] if replace and x in replace else self.value(x, env, weights) for x in node.inputs]
        if batch > 1:
            if node.op_type == "Transpose" and int(node.attrs.get("perm", [1])[0]) != 0:
                raise NotBatchable(node.name)
            key = BATCH_AXIS_ATTR.get(node.op_type)
            if key and int(node.attrs.get(key, 0 if node.op_type != "Softmax" else -1)) % ins[0].dim() == 0:
                raise NotBatchable(node.name)
        out = OPS[node.op_type](ins, node.attrs, batch)
        return out if isinstance(out, list) else [out]

    def run(self, feeds: dict, act: dict[str, Callable] | None = None, weights: dict | None = None,
            keep: Iterable[str] = (), on_tensor: Callable[[str, object], None] | None = None) -> dict:
        """Run the graph on ``feeds`` (torch tensors, samples stacked on dim 0); returns outputs and ``keep`` tensors.

        ``act[name](x)`` replaces tensor ``name`` right after it is produced (graph inputs included), the way a QDQ
        pair after its producer does; ``weights`` overrides initializers; ``on_tensor(name, x)`` sees every
        produced tensor (before ``act``).
        """
        keep = set(keep)
        first = feeds[self.input_names[0]]
        batch = int(first.shape[0])
        env: dict = {}
        for name in self.input_names:
            x = feeds[name]
            if on_tensor:
                on_tensor(name, x)
            env[name] = act[name](x) if act and name in act else x
        retain = keep | set(self.output_names)
        for i, node in enumerate(self.nodes):
            outs = self.run_node(node, env, batch, weights)
            for name, val in zip(node.outputs, outs):
                if not name:
                    continue
                if on_tensor:
                    on_tensor(name, val)
                env[name] = act[name](val) if act and name in act else val
            for x in node.inputs:
                if self.last_use.get(x) == i and x not in retain:
                    env.pop(x, None)
        return {n: env[n] for n in retain if n in env}

    def batchable(self, a: dict, b: dict) -> bool:
        """True when two different samples stacked give what each gives alone (so batching is safe)."""
        import torch

        two = {k: torch.cat([a[k], b[k]]) for k in self.input_names}
        try:
            with torch.no_grad():
                both = self.run(two)[self.output_names[0]]
                alone = [self.run(f)[self.output_names[0]] for f in (a, b)]
        except (NotBatchable, RuntimeError):
            return False
        return both.shape[0] == 2 * alone[0].shape[0] and all(
            bool(torch.allclose(both[i * n:(i + 1) * n], x, rtol=1e-4, atol=1e-5))
            for i, (x, n) in enumerate((x, x.shape[0]) for x in alone))
