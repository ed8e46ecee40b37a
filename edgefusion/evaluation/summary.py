"""Per-variant aggregates of an evaluation: mean PSNR/SSIM vs the float reference, per-step error curves, attribute
accuracy, CLIP score, FID (vs reference statistics and vs the float images) and the latency estimate."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefusion.evaluation.alignment import attribute_accuracy
from edgefusion.evaluation.fid import FeatureStats, frechet_distance
from edgefusion.evaluation.results import EvalResult
from edgefusion.evaluation.variants import TORCH

FID_DIR = "fid"


def _mean(values: list) -> float | None:
    """Mean, or ``None`` when empty or when any value is missing/non-finite (a NaN never averages away)."""
    if not values:
        return None
    arr = np.array([np.nan if v is None else v for v in values], np.float64)
    return float(arr.mean()) if np.isfinite(arr).all() else None


def _per_step(rows: list[list[float]]) -> list[float | None]:
    rows = [r for r in rows if r]
    if not rows:
        return []
    return [_mean([r[i] if i < len(r) else None for r in rows]) for i in range(max(len(r) for r in rows))]


def fid_stats_path(folder: Path, key: str) -> Path:
    """Where a variant's feature statistics live inside an evaluation folder."""
    return Path(folder) / FID_DIR / f"{key}.npz"


def summarise(result: EvalResult, folder: str | Path,
              ref_stats: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, dict]:
    """Aggregate ``result`` (whose FID statistics, if any, are in ``folder``) per variant key."""
    folder = Path(folder)
    stats = {v.key: FeatureStats.load(fid_stats_path(folder, v.key)) for v in result.spec.variants
             if fid_stats_path(folder, v.key).is_file()}
    ref_key = next((v.key for v in result.spec.variants if v.kind == TORCH), None)
    out = {}
    for v in result.spec.variants:
        recs = result.records.get(v.key, [])
        steps_noise = _per_step([r.noise_sqnr_db for r in recs])
        steps_latent = _per_step([r.latent_psnr_db for r in recs])
        matches = [r.attributes for r in recs if r.attributes is not None]
        clips = [r.clip_score for r in recs if r.clip_score is not None]
        s = {"label": v.label, "kind": v.kind, "policy": v.policy, "images": len(recs),
             "psnr_db": None if v.kind == TORCH else _mean([r.psnr_db for r in recs]),
             "ssim": None if v.kind == TORCH else _mean([r.ssim for r in recs]),
             "noise_sqnr_db_per_step": steps_noise, "latent_psnr_db_per_step": steps_latent,
             "noise_sqnr_db_mean": _mean(steps_noise) if steps_noise else None,
             "latent_psnr_db_final": steps_latent[-1] if steps_latent else None,
             "attribute_accuracy": attribute_accuracy(matches), "attribute_images": len(matches),
             "clip_score": _mean(clips) if clips else None,
             "fid": None, "fid_vs_float": None, "fid_images": stats[v.key].n if v.key in stats else 0,
             "latency": v.latency}
        if v.key in stats and stats[v.key].n >= 2:
            mu, sigma = stats[v.key].mu_sigma()
            if ref_stats is not None:
                s["fid"] = frechet_distance(mu, sigma, *ref_stats)
            if v.kind != TORCH and ref_key in stats and stats[ref_key].n >= 2:
                s["fid_vs_float"] = frechet_distance(mu, sigma, *stats[ref_key].mu_sigma())
        out[v.key] = s
    return out
