"""Predict the UNet output noise of any precision assignment from per-source noise energies.

Quantization sources are independent to first order, so the output noise of a policy is the sum of the noise of
the sources its plan turns on: each site at the width (or float16 rounding) the exporter's rules give it, each
weight int8 or float16. :class:`NoiseModel` holds the per-source energies per denoising step (summed over the
samples of that step) and the signal energy per step; SQNR is pooled over samples as ``mean_sqnr_db`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgefusion.metrics import energy_ratio_db
from edgefusion.quant.plan import QuantPlan
from edgefusion.quant.precision import Precision
from edgefusion.sensitivity.sites import QuantSites

ACT_KEYS = {8: "8", 16: "16", "fp16": "fp16"}


def sqnr_from(signal, noise) -> float:
    """``10 log10(signal / noise)`` of summed energies, capped like :func:`edgefusion.metrics.sqnr_db`."""
    return energy_ratio_db(np.sum(signal), np.sum(noise))


@dataclass
class NoiseModel:
    """Per-source noise per step (``noise[key] -> [steps]``), the signal per step, and the graph's sites."""

    sites: QuantSites
    noise: dict[str, np.ndarray]
    signal: np.ndarray  # [steps]

    def _get(self, key: str) -> np.ndarray:
        return self.noise.get(key, np.zeros_like(self.signal))

    def plan_noise(self, plan: QuantPlan) -> np.ndarray:
        """Predicted output noise per step of a full :class:`QuantPlan`."""
        total = np.zeros_like(self.signal)
        for t, bits in plan.act_bits.items():
            total = total + self._get(f"act|{t}|{bits}")
        for t in plan.fp16_tensors:
            total = total + self._get(f"act|{t}|fp16")
        for w in plan.int8_weights:
            total = total + self._get(f"w|{w}|int8")
        for w in plan.fp16_weights:
            total = total + self._get(f"w|{w}|fp16")
        return total

    def noise_of(self, precisions: dict[str, Precision]) -> np.ndarray:
        """Predicted output noise per step when layers take ``precisions`` (others FP32)."""
        return self.plan_noise(self.sites.plan(precisions))

    def sqnr(self, precisions: dict[str, Precision]) -> float:
        """Predicted pooled SQNR (dB) of the UNet output."""
        return sqnr_from(self.signal, self.noise_of(precisions))

    def per_step_sqnr(self, noise: np.ndarray) -> list[float]:
        """SQNR per step for a per-step noise vector."""
        return [sqnr_from(s, n) for s, n in zip(self.signal, noise)]

    # -- local evaluation: only the sites and weights one layer's precision decides

    def weight_noise(self, layer: str, precision: Precision | None) -> np.ndarray:
        """Noise per step of ``layer``'s own weights at ``precision`` (shared initializers counted per layer)."""
        if precision is not None and precision.is_integer:
            return sum((self._get(f"w|{w}|int8") for w, _ in self.sites.int8_slots.get(layer, [])),
                       np.zeros_like(self.signal))
        if precision is Precision.FP16:
            return sum((self._get(f"w|{w}|fp16") for w in self.sites.float_inits.get(layer, [])),
                       np.zeros_like(self.signal))
        return np.zeros_like(self.signal)

    def local_noise(self, layer: str, precisions: dict[str, Precision]) -> np.ndarray:
        """Noise per step of every site touching ``layer`` plus its weights, under ``precisions``."""
        total = self.weight_noise(layer, precisions.get(layer))
        for i in self.sites.layer_sites.get(layer, []):
            t = self.sites.site_treatment(self.sites.sites[i], precisions)
            if t is not None:
                total = total + self._get(f"act|{self.sites.sites[i].tensor}|{ACT_KEYS[t]}")
        return total

    def single_layer_noise(self, layer: str, precision: Precision) -> np.ndarray:
        """Noise per step when only ``layer`` is quantized (every other layer float)."""
        return self.local_noise(layer, {layer: precision})

    def leave_one_out_noise(self, base: dict[str, Precision], base_noise: np.ndarray, layer: str,
                            precision: Precision) -> np.ndarray:
        """Noise per step of ``base`` with ``layer`` switched to ``precision``."""
        changed = dict(base)
        changed[layer] = precision
        return base_noise - self.local_noise(layer, base) + self.local_noise(layer, changed)

    def local_tables(self) -> tuple[list[dict], dict[str, dict[str, float]]]:
        """Pooled noise of every site per treatment, and of every layer's weights per weight treatment."""
        site_noise = [{t: float(self._get(f"act|{s.tensor}|{k}").sum()) for t, k in ACT_KEYS.items()}
                      for s in self.sites.sites]
        weight_noise = {}
        for layer in self.sites.int8_slots:
            int8 = sum(float(self._get(f"w|{w}|int8").sum()) for w, _ in self.sites.int8_slots[layer])
            fp16 = sum(float(self._get(f"w|{w}|fp16").sum()) for w in self.sites.float_inits[layer])
            weight_noise[layer] = {"int8": int8, "fp16": fp16}
        return site_noise, weight_noise
