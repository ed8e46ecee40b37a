"""``sensitivity.json``: per-source noise of one UNet, what it was computed on, and the views derived from it.

The report is self-contained: with the sites (which tensors and weights each layer's precision decides) and the
per-source noise per denoising step it predicts the SQNR of *any* policy, so the notebook and ``--mpq-policy auto``
need neither the model nor the graph. It is rewritten atomically after every profiled chunk of samples; a report
with ``complete: false`` is resumed by re-running the same command.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgefusion.errors import EdgeFusionError
from edgefusion.quant.layers import Layer
from edgefusion.quant.policy import PolicySpec
from edgefusion.quant.precision import Precision
from edgefusion.sensitivity.cost import LayerStats, ProxyCost, policy_cost
from edgefusion.sensitivity.noise_model import NoiseModel, sqnr_from
from edgefusion.sensitivity.sites import QuantSites

REPORT_FORMAT = 1
CANDIDATES = (Precision.W8A8, Precision.W8A16, Precision.FP16)
METRIC = "SQNR (dB) of the UNet output (noise prediction) vs the float graph, noise and signal pooled over samples"


@dataclass
class Provenance:
    """What a report was computed on; two reports (or a report and an export) are comparable only if these agree."""

    model: str  # source reference (preset name or folder)
    random_weights: bool
    unet_digest: str  # content hash of the float UNet's weights (resolution independent)
    calibration: dict  # prompts, steps, guidance_scale, seed, height, width, samples, digest
    policy: dict  # base policy (rules) of the leave-one-out view
    method: dict  # how the noise was estimated (name, probes, profiled samples, seed)
    metric: str = METRIC
    native_resolution: list[int] | None = None  # the model's own size when the profile ran at a lower one
    edgefusion_version: str = ""
    created: str = ""

    def mismatch(self, other: Provenance) -> str | None:
        """Why ``other`` does not describe the same profiling job (None if it does)."""
        if self.unet_digest != other.unet_digest:
            return (f"it was computed for another model ({self.model}, UNet digest {self.unet_digest}; this run: "
                    f"{other.model}, {other.unet_digest})")
        if self.calibration.get("digest") != other.calibration.get("digest"):
            return (f"it was computed on another calibration set (digest {self.calibration.get('digest')}, "
                    f"{self.calibration.get('prompts')} prompts x {self.calibration.get('steps')} steps at "
                    f"{self.calibration.get('height')}px; this run: {other.calibration.get('digest')}, "
                    f"{other.calibration.get('prompts')} x {other.calibration.get('steps')} at "
                    f"{other.calibration.get('height')}px)")
        if self.calibration.get("measured_on") != other.calibration.get("measured_on"):
            return (f"it was measured on other samples ({self.calibration.get('measured_on')}; this run: "
                    f"{other.calibration.get('measured_on')})")
        for key in ("policy", "method", "metric"):
            if getattr(self, key) != getattr(other, key):
                return f"its {key} differs ({getattr(self, key)} vs {getattr(other, key)})"
        return None


def _mapping(v) -> dict:
    if not isinstance(v, dict):
        raise TypeError(f"expected a mapping, got {type(v).__name__}")
    return v


def _ints(v) -> list[int]:
    if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise TypeError("expected a list of integers")
    return list(v)


def _numbers(v) -> list[float]:
    if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise TypeError("expected a list of numbers")
    return [float(x) for x in v]


def _flag(v) -> bool:
    if not isinstance(v, bool):
        raise TypeError("expected true or false")
    return v


@dataclass
class SensitivityReport:
    """Per-source noise of a UNet (see the module docstring), JSON round-trippable."""

    provenance: Provenance
    steps: list[int]  # denoising step of each column
    layers: dict[str, LayerStats]
    sites: QuantSites
    noise: dict[str, list[float]] = field(default_factory=dict)  # source key -> noise energy per step
    signal: list[float] = field(default_factory=list)  # signal energy per step (profiled samples)
    samples_per_step: list[int] = field(default_factory=list)
    profiled_samples: list[int] = field(default_factory=list)  # calibration sample indices to profile
    done_samples: list[int] = field(default_factory=list)
    complete: bool = False
    checks: dict = field(default_factory=dict)  # simulated vs predicted (policies, layers, resolution)
    timings_s: dict[str, float] = field(default_factory=dict)
    views: dict = field(default_factory=dict)  # derived (see views.py), kept for readers without edgefusion
    latency: dict = field(default_factory=dict)  # per-layer device latency table (LatencyCost), when built
    format: int = REPORT_FORMAT

    # -- persistence

    def to_dict(self) -> dict:
        """Plain-dict form."""
        return {"format": self.format, "complete": self.complete, "provenance": asdict(self.provenance),
                "steps": self.steps, "signal": self.signal, "samples_per_step": self.samples_per_step,
                "profiled_samples": self.profiled_samples, "done_samples": self.done_samples,
                "timings_s": self.timings_s, "checks": self.checks, "views": self.views, "latency": self.latency,
                "layers": {n: s.to_dict() for n, s in self.layers.items()}, "sites": self.sites.to_dict(),
                "noise": self.noise}

    @classmethod
    def from_dict(cls, d: dict, where: str = "report") -> SensitivityReport:
        """Validate and build; a damaged or foreign file raises a one-line error naming ``where``."""
        if not isinstance(d, dict) or "provenance" not in d or "noise" not in d:
            raise EdgeFusionError(f"{where} is not an edgefusion sensitivity report",
                                  "pass the sensitivity.json written by `edgefusion profile`")
        if d.get("format") != REPORT_FORMAT:
            raise EdgeFusionError(f"{where} has report format {d.get('format')}, this edgefusion reads {REPORT_FORMAT}",
                                  "re-run `edgefusion profile` with this version")
        try:
            rep = cls(provenance=Provenance(**_mapping(d["provenance"])), steps=_ints(d["steps"]),
                      layers={n: LayerStats(**_mapping(s)) for n, s in _mapping(d["layers"]).items()},
                      sites=QuantSites.from_dict(_mapping(d["sites"])),
                      noise={k: _numbers(v) for k, v in _mapping(d["noise"]).items()},
                      signal=_numbers(d["signal"]), samples_per_step=_ints(d["samples_per_step"]),
                      profiled_samples=_ints(d["profiled_samples"]), done_samples=_ints(d["done_samples"]),
                      complete=_flag(d["complete"]), checks=dict(_mapping(d.get("checks", {}))),
                      timings_s=dict(_mapping(d.get("timings_s", {}))), views=dict(_mapping(d.get("views", {}))),
                      latency=dict(_mapping(d.get("latency") or {})))
            if rep.latency:
                from edgefusion.sensitivity.latency_cost import LatencyCost

                LatencyCost.from_dict(rep.latency)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise EdgeFusionError(f"{where} is incomplete or damaged ({type(err).__name__}: {err})",
                                  "re-run `edgefusion profile` with --overwrite") from None
        problem = rep.problem()
        if problem:
            raise EdgeFusionError(f"{where} is inconsistent ({problem})", "re-run `edgefusion profile` with --overwrite")
        return rep

    def problem(self) -> str | None:
        """Why the figures cannot be a profile's (None if they can): one value per step everywhere, noise
        energies finite and non-negative, signal energy finite and positive on every step of a complete report
        (zero only on steps an unfinished one has not reached), at least one step, sample lists that agree."""
        if not self.steps:
            return "no denoising steps"
        if not self.profiled_samples:
            return "no profiled samples"
        if not set(self.done_samples) <= set(self.profiled_samples):
            return "done samples that were not to be profiled"
        if len(self.samples_per_step) != len(self.steps) or sum(self.samples_per_step) != len(self.profiled_samples):
            return "samples per step do not add up to the profiled samples"
        if len(self.signal) != len(self.steps):
            return "the signal does not have one value per step"
        bad = next((k for k, v in self.noise.items() if len(v) != len(self.steps)), None)
        if bad is not None:
            return f"noise of '{bad}' does not have one value per step"
        bad = next((k for k, v in self.noise.items() if not all(np.isfinite(x) and x >= 0 for x in v)), None)
        if bad is not None:
            return f"noise of '{bad}' is negative, NaN or infinite"
        if not all(np.isfinite(x) and x >= 0 for x in self.signal):
            return "the signal energy is negative, NaN or infinite"
        if self.complete:
            if set(self.done_samples) != set(self.profiled_samples):
                return "marked complete with samples not profiled"
            if not all(x > 0 for x in self.signal):
                return "the signal energy is zero on a profiled step"
            if not self.noise:
                return "no noise figures in a complete report"
        return None

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically (a temporary file renamed over the old one: never a half-written report)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), separators=(",", ":")))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SensitivityReport:
        """Read a report (a folder is read as ``<folder>/sensitivity.json``)."""
        path = Path(path)
        if path.is_dir():
            path = path / "sensitivity.json"
        if not path.is_file():
            raise EdgeFusionError(f"no sensitivity report at '{path}'", "run `edgefusion profile` first")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise EdgeFusionError(f"sensitivity report '{path}' is corrupted or truncated ({err})",
                                  "re-run `edgefusion profile` with --overwrite") from None
        return cls.from_dict(data, where=f"sensitivity report '{path}'")

    # -- evaluation

    def noise_model(self) -> NoiseModel:
        """The per-source noise as a :class:`NoiseModel` (policy predictions)."""
        return NoiseModel(self.sites, {k: np.asarray(v) for k, v in self.noise.items()}, np.asarray(self.signal))

    def layer_objects(self) -> list[Layer]:
        """The profiled graph's (non-passthrough) layers, for resolving policy specs."""
        return [Layer(n, op, [], False) for n, op in self.sites.op_types.items()]

    def resolve(self, spec: PolicySpec) -> dict[str, Precision]:
        """Layer precisions of a policy on this UNet (text-encoder / VAE rules do not apply here)."""
        layers = self.layer_objects()
        spec = spec.bound(layers)
        return {la.name: spec.precision_for(la) for la in layers}

    def cost_model(self):
        """The device latency table the report carries (ms per image), else the MAC/byte proxy."""
        if self.latency:
            from edgefusion.sensitivity.latency_cost import LatencyCost

            return LatencyCost.from_dict(self.latency)
        return ProxyCost()

    def predict(self, precisions: dict[str, Precision], cost_model=None) -> dict:
        """Predicted pooled SQNR, SQNR per step and cost of an assignment (default cost: :meth:`cost_model`)."""
        nm = self.noise_model()
        noise = nm.noise_of(precisions)
        return {"sqnr_db": sqnr_from(nm.signal, noise), "per_step_db": nm.per_step_sqnr(noise),
                "cost": policy_cost(self.layers, precisions, cost_model or self.cost_model())}

    def check_compatible(self, other: Provenance, what: str) -> None:
        """Refuse (one-line error) when ``other`` is not the model and calibration this report describes."""
        why = self.provenance.mismatch(other)
        if why:
            raise EdgeFusionError(f"the sensitivity report does not match {what}: {why}",
                                  "profile this model with the same calibration settings, or pass another report")
