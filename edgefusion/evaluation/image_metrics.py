"""Image fidelity against the float reference: PSNR (edgefusion.metrics) and SSIM (torchmetrics)."""

from __future__ import annotations

import numpy as np

from edgefusion.metrics import psnr_db


def image_psnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB of two HxWx3 images in [0, 1] (200 dB cap for identical images)."""
    return psnr_db(reference, test, peak=1.0)


def image_ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """SSIM of two HxWx3 images in [0, 1]: torchmetrics' Gaussian-window SSIM (11 px, sigma 1.5, data range 1),
    the window shrunk to the image for images smaller than 11 px. NaN when an input is not finite."""
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    ref, img = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    if not (np.isfinite(ref).all() and np.isfinite(img).all()):
        return float("nan")
    kernel = min(11, min(ref.shape[:2]) // 2 * 2 - 1)  # odd, at most the image side
    a = torch.from_numpy(ref).permute(2, 0, 1)[None]
    b = torch.from_numpy(img).permute(2, 0, 1)[None]
    return float(structural_similarity_index_measure(b, a, data_range=1.0, kernel_size=kernel))
