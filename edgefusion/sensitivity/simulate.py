"""Whole-graph simulation of a quantization plan in PyTorch, on stacked calibration samples.

:class:`Simulator` owns the float graph (run by :class:`TorchGraph`), its layers and sites, the calibration samples
(stacked into chunks that fit a memory budget), their float outputs and the calibration ranges of every activation.
``run_plan`` fake-quantizes exactly the tensors and weights a :class:`QuantPlan` names, so its output is what the
exported QDQ graph computes (to float rounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgefusion.calibration.capture import Sample
from edgefusion.errors import EdgeFusionError
from edgefusion.quant.graph_index import GraphIndex
from edgefusion.quant.layers import find_layers
from edgefusion.quant.plan import QuantPlan
from edgefusion.quant.policy import PolicySpec, ResolvedPolicy, resolve_policy
from edgefusion.quant.precision import Precision
from edgefusion.sensitivity.fakequant import (
    activation_quantizer,
    fp16_round,
    fp16_weight,
    int8_weight,
)
from edgefusion.sensitivity.sites import QuantSites
from edgefusion.sensitivity.torch_graph import TorchGraph


@dataclass
class Chunk:
    """Samples stacked on the batch dimension."""

    index: list[int]  # positions in the sample list
    feeds: dict  # input name -> torch tensor [n, ...]


def noise_energy(reference, test) -> np.ndarray:
    """Per-sample squared error ``sum((ref - test)^2)`` over all but the first dimension (float64)."""
    d = (reference.double() - test.double()).reshape(reference.shape[0], -1)
    return (d * d).sum(1).numpy()


class Simulator:
    """The float graph, its quantization sites, samples, reference outputs and calibration ranges."""

    def __init__(self, float_path: str | Path, component: str, samples: list[Sample], memory_mb: int = 2048,
                 progress: bool = False):
        import torch

        self.path = Path(float_path)
        model = onnx.load(str(self.path), load_external_data=False)
        if any(not n.name for n in model.graph.node):
            raise EdgeFusionError(f"'{self.path}' has unnamed nodes", "pass a graph prepared by edgefusion export")
        self.component = component
        self.layers = find_layers(model, component)
        self.index = GraphIndex.build(model)
        self.sites = QuantSites.build(model, self.layers, self.index)
        self.structure = model
        self.graph = TorchGraph(self.path)
        self.samples = samples
        self.output = self.graph.output_names[0]
        feeds = [{k: torch.from_numpy(np.ascontiguousarray(s.inputs[k])) for k in self.graph.input_names}
                 for s in samples]
        self.memory_mb = memory_mb
        self.feeds = feeds
        # sample 0 runs alone first: its pass measures the activation bytes of one sample (every tensor produced),
        # which sizes the chunks the other samples are stacked into (when stacking is safe for this graph)
        self._lo: dict[str, float] = {}
        self._hi: dict[str, float] = {}
        sizes: list[int] = []
        self.reference = [self._float_run(Chunk([0], feeds[0]), sizes)]
        self.sample_bytes = int(sum(sizes))
        per = max(1, int(memory_mb * 2 ** 20 // (5 * max(self.sample_bytes, 1))))
        if per > 1 and len(samples) > 2 and not self.graph.batchable(feeds[1], feeds[-1]):
            per = 1
        self.per_chunk = per
        from tqdm.auto import tqdm

        for chunk in tqdm(self.chunks_for(range(1, len(samples))), desc="float pass", disable=not progress,
                          leave=False):
            out = self._float_run(chunk)
            self.reference += [out[i:i + 1] for i in range(out.shape[0])]
        bad = [t for t in self._lo if not (np.isfinite(self._lo[t]) and np.isfinite(self._hi[t]))]
        if bad:
            raise EdgeFusionError(f"calibration activations of '{bad[0]}' are NaN/inf ({len(bad)} tensors affected)",
                                  "the float graph overflows on the calibration inputs: check the model weights")
        self.ranges = {t: (self._lo[t], self._hi[t]) for t in self._lo}
        self._wcache: dict[tuple[str, str], object] = {}

    def chunks_for(self, indices) -> list[Chunk]:
        """The given samples stacked into chunks of at most ``per_chunk``."""
        import torch

        indices = list(indices)
        out = []
        for i in range(0, len(indices), self.per_chunk):
            idx = indices[i:i + self.per_chunk]
            out.append(Chunk(idx, {k: torch.cat([self.feeds[j][k] for j in idx]) for k in self.graph.input_names}))
        return out

    def _float_run(self, chunk: Chunk, sizes: list[int] | None = None):
        """Float output of one chunk; updates the running min/max of every float activation (as ``collect_ranges``)."""
        import torch

        def see(name, x):
            if not isinstance(x, torch.Tensor):
                return
            if sizes is not None:
                sizes.append(x.numel() * x.element_size())
            if x.is_floating_point() and name in self.index.activations:
                a, b = torch.aminmax(x.detach())
                self._lo[name] = min(self._lo.get(name, np.inf), float(a))
                self._hi[name] = max(self._hi.get(name, -np.inf), float(b))

        with torch.no_grad():
            return self.graph.run(chunk.feeds, on_tensor=see)[self.output]

    # -- policies and plans

    def resolve(self, spec: PolicySpec) -> ResolvedPolicy:
        """A policy spec applied to this graph's layers."""
        return resolve_policy(spec, self.layers)

    def plan(self, precisions: dict[str, Precision]) -> QuantPlan:
        """The exporter's plan for these layer precisions (layers not named stay FP32)."""
        return self.sites.plan(precisions)

    def weight(self, name: str, kind: str, axis: int = 0):
        """A quantized weight (``"int8"`` per channel on ``axis`` or ``"fp16"``), cached."""
        key = (name, kind)
        if key not in self._wcache:
            w = self.graph.weights[name]
            self._wcache[key] = int8_weight(w, axis) if kind == "int8" else fp16_weight(w)
        return self._wcache[key]

    def transforms(self, plan: QuantPlan) -> tuple[dict, dict]:
        """``(activation transforms, weight overrides)`` implementing ``plan``."""
        act = {t: activation_quantizer(*self.ranges[t], bits) for t, bits in plan.act_bits.items()}
        act.update({t: fp16_round for t in plan.fp16_tensors})
        weights = {w: self.weight(w, "int8", axis) for w, axis in plan.int8_weights.items()}
        weights.update({w: self.weight(w, "fp16") for w in plan.fp16_weights})
        return act, weights

    def run_plan(self, plan: QuantPlan, chunk: Chunk):
        """Quantized output of one chunk."""
        import torch

        act, weights = self.transforms(plan)
        with torch.no_grad():
            return self.graph.run(chunk.feeds, act=act, weights=weights)[self.output]

    def plan_noise(self, plan: QuantPlan, indices=None) -> np.ndarray:
        """Per-sample output noise energy of ``plan`` on ``indices`` (all samples by default), by simulation."""
        import torch

        indices = list(range(len(self.samples)) if indices is None else indices)
        out = []
        for chunk in self.chunks_for(indices):
            ref = torch.cat([self.reference[i] for i in chunk.index])
            out.append(noise_energy(ref, self.run_plan(plan, chunk)))
        return np.concatenate(out)

    def signal(self, indices=None) -> np.ndarray:
        """Per-sample energy of the float output."""
        indices = range(len(self.samples)) if indices is None else indices
        return np.array([float((self.reference[i].double() ** 2).sum()) for i in indices])
