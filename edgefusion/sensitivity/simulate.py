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
from edgefusion.quant.range_methods import RangeRule
from edgefusion.sensitivity.fakequant import (
    activation_quantizer,
    fp16_round,
    fp16_weight,
    int8_weight,
    int8_weight_scale,
    int32_bias,
    uint_constant,
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
    """The float graph, its quantization sites, the measured samples with their float outputs, and the activation
    ranges (min/max over ``range_samples``, the calibration set, as the exporter collects them).

    ``samples`` are what quantization error is measured on: held-out samples (the export's verification prompts)
    show what the exported graph does on new prompts, clipping outside the calibration ranges included; without
    ``range_samples`` they are measured in-sample.
    """

    def __init__(self, float_path: str | Path, component: str, samples: list[Sample],
                 range_samples: list[Sample] | None = None, memory_mb: int = 2048, progress: bool = False,
                 method: str | None = None):
        import torch
        from tqdm.auto import tqdm

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
        self.in_sample = range_samples is None
        self.output = self.graph.output_names[0]
        self.memory_mb = memory_mb

        def feed(s: Sample) -> dict:
            return {k: torch.from_numpy(np.ascontiguousarray(s.inputs[k])) for k in self.graph.input_names}

        self.feeds = [feed(s) for s in samples]
        ranged = self.feeds if self.in_sample else [feed(s) for s in range_samples]
        # one sample alone first: its pass measures the activation bytes of a sample (every tensor produced), which
        # sizes the chunks the others are stacked into (when stacking is safe for this graph)
        self._lo: dict[str, float] = {}
        self._hi: dict[str, float] = {}
        self.shapes: dict[str, tuple] = {}  # every tensor of one sample (batch 1): sizes chunks, costs layers
        first = self._float_run(Chunk([0], ranged[0]), self.shapes)
        self.sample_bytes = int(sum(4 * int(np.prod(s)) for s in self.shapes.values()))
        per = max(1, int(memory_mb * 2 ** 20 // (5 * max(self.sample_bytes, 1))))
        if per > 1 and len(ranged) > 2 and not self.graph.batchable(ranged[1], ranged[-1]):
            per = 1
        self.per_chunk = per
        for chunk in tqdm(self._stack(ranged, range(1, len(ranged))), desc="ranges", disable=not progress,
                          leave=False):
            out = self._float_run(chunk)
            if self.in_sample:
                first = torch.cat([first, out])
        bad = [t for t in self._lo if not (np.isfinite(self._lo[t]) and np.isfinite(self._hi[t]))]
        if bad:
            raise EdgeFusionError(f"calibration activations of '{bad[0]}' are NaN/inf ({len(bad)} tensors affected)",
                                  "the float graph overflows on the calibration inputs: check the model weights")
        self.ranges = {t: (self._lo[t], self._hi[t]) for t in self._lo}
        self.range_rules = self._range_rules(range_samples or samples, method, progress)
        self.method = self.range_rules[8].method
        if self.in_sample:
            self.reference = [first[i:i + 1] for i in range(first.shape[0])]
        else:
            self.reference = []
            with torch.no_grad():
                for chunk in self.chunks_for(range(len(samples))):
                    out = self.graph.run(chunk.feeds)[self.output]
                    self.reference += [out[i:i + 1] for i in range(out.shape[0])]
        self._wcache: dict[tuple[str, str], object] = {}
        self._wscale: dict[str, np.ndarray] = {}
        self.weight_bytes = sum(w.numel() * 4 for w in self.graph.weights.values())

    def _range_rules(self, samples: list[Sample], method: str, progress: bool) -> dict[int, RangeRule]:
        """The export's range estimation (``method``) for every site, at 8 and at 16 bits (each width as chosen
        under the uniform policy of that width: the ``w8a8`` and ``w8a16`` presets)."""
        from edgefusion.quant.policy import load_policy
        from edgefusion.quant.range_methods import estimate_ranges

        feeds = [s.inputs for s in samples]
        groups = [s.prompt_index for s in samples]
        tensors = [site.tensor for site in self.sites.sites]
        rules = {}
        for bits, preset in ((8, "w8a8"), (16, "w8a16")):
            plan = self.plan(self.resolve(load_policy(preset)).precisions)
            rules[bits] = estimate_ranges(self.path, plan, feeds, groups, method, progress=progress,
                                          desc=f"ranges ({bits}-bit)", tensors=tensors)
        return rules

    def range_for(self, tensor: str, bits: int) -> tuple[float, float]:
        """The range ``tensor`` is quantized with at ``bits`` (as the exporter's calibration method picks it)."""
        return self.range_rules[bits].range(tensor, bits)

    def _stack(self, feeds: list[dict], indices) -> list[Chunk]:
        import torch

        indices = list(indices)
        return [Chunk(indices[i:i + self.per_chunk],
                      {k: torch.cat([feeds[j][k] for j in indices[i:i + self.per_chunk]])
                       for k in self.graph.input_names})
                for i in range(0, len(indices), self.per_chunk)]

    def chunks_for(self, indices) -> list[Chunk]:
        """The given (measured) samples stacked into chunks of at most ``per_chunk``."""
        return self._stack(self.feeds, indices)

    def _float_run(self, chunk: Chunk, shapes: dict | None = None):
        """Float output of one chunk; updates the running min/max of every float activation (as ``collect_ranges``)."""
        import torch

        def see(name, x):
            if not isinstance(x, torch.Tensor):
                return
            if shapes is not None:
                shapes[name] = tuple(x.shape)
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
        """A quantized weight (``"int8"`` per channel on ``axis`` or ``"fp16"``); cached when both quantized copies
        of all weights fit in half the memory budget (not for sd-v1.5's 3.4 GB: recomputing is cheaper than RAM)."""
        key = (name, kind)
        if key in self._wcache:
            return self._wcache[key]
        w = self.graph.weights[name]
        q = int8_weight(w, axis) if kind == "int8" else fp16_weight(w)
        if 2 * self.weight_bytes <= self.memory_mb * 2 ** 19:
            self._wcache[key] = q
        return q

    def transforms(self, plan: QuantPlan) -> tuple[dict, dict]:
        """``(activation transforms, weight overrides)`` implementing ``plan``."""
        act = {t: activation_quantizer(*self.range_for(t, bits), bits) for t, bits in plan.act_bits.items()}
        act.update({t: fp16_round for t in plan.fp16_tensors})
        weights = {w: self.weight(w, "int8", axis) for w, axis in plan.int8_weights.items()}
        weights.update({w: self.weight(w, "fp16") for w in plan.fp16_weights})
        for c, bits in plan.const_bits.items():
            weights[c], self._wscale[(c, bits)] = uint_constant(self.graph.weights[c], bits)
        weights.update({b: self.bias(b, x, plan.act_bits[x], w, plan.int8_weights.get(w), plan.const_bits.get(w))
                        for b, (x, w) in plan.int32_biases.items()})
        return act, weights

    def bias(self, name: str, source: str, bits: int, weight: str, axis: int | None, const_bits: int | None = None):
        """An int32 bias as the QDQ graph adds it (its scale: ``source``'s activation scale x ``weight``'s; the
        weight is int8 per channel on ``axis``, or a ``const_bits`` constant)."""
        if const_bits is not None:
            key = (weight, const_bits)
            if key not in self._wscale:
                self._wscale[key] = uint_constant(self.graph.weights[weight], const_bits)[1]
            return int32_bias(self.graph.weights[name], self.range_for(source, bits), bits, self._wscale[key])
        if weight not in self._wscale:
            self._wscale[weight] = int8_weight_scale(self.graph.weights[weight], axis)
        return int32_bias(self.graph.weights[name], self.range_for(source, bits), bits, self._wscale[weight])

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
