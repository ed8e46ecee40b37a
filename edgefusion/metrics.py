"""Fidelity metrics in dB (numpy only)."""

from __future__ import annotations

import math

import numpy as np

CAP_DB = 200.0  # identical arrays report this instead of +inf (JSON has no infinity); NaN/inf inputs give NaN


def energy_ratio_db(signal: float, noise: float) -> float:
    """``10 log10(signal / noise)`` for energies, capped at ``CAP_DB``: NaN for a non-finite noise, the cap for none.

    Taken as a difference of logarithms, so no quotient under- or overflows: a zero signal over a huge noise is a
    large negative figure (as if the signal were 1e-300), never log10(0)."""
    signal, noise = float(signal), float(noise)
    if not math.isfinite(noise):
        return float("nan")
    if noise <= 0:
        return CAP_DB
    return float(min(CAP_DB, 10 * (math.log10(max(signal, 1e-300)) - math.log10(noise))))


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio: ``10 log10(sum(ref^2) / sum((ref - test)^2))``, capped at 200 dB."""
    ref = np.asarray(reference, np.float64)
    err = ((ref - np.asarray(test, np.float64)) ** 2).sum()
    return energy_ratio_db((ref ** 2).sum(), err)


def psnr_db(reference: np.ndarray, test: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio for images in ``[0, peak]``, capped at 200 dB."""
    mse = float(((np.asarray(reference, np.float64) - np.asarray(test, np.float64)) ** 2).mean())
    if not np.isfinite(mse):
        return float("nan")
    return CAP_DB if mse == 0 else float(min(CAP_DB, 10 * np.log10(peak ** 2 / mse)))


def mean_sqnr_db(references: list[np.ndarray], tests: list[np.ndarray]) -> float:
    """SQNR pooled over several samples (noise and signal energies summed first)."""
    sig = sum(float((np.asarray(r, np.float64) ** 2).sum()) for r in references)
    err = sum(float(((np.asarray(r, np.float64) - np.asarray(t, np.float64)) ** 2).sum())
              for r, t in zip(references, tests))
    return energy_ratio_db(sig, err)
