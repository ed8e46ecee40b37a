"""FID with a feature network and reference statistics the user keeps locally (nothing is downloaded).

Feature network: a TorchScript module called as ``net(images, return_features=True)`` on uint8 NCHW images in
[0, 255] at their own resolution, returning (N, D) features: the standard ``inception-2015-12-05.pt`` of StyleGAN3 /
clean-fid is one (it resizes to 299 itself; D = 2048). Reference statistics: an ``.npz`` with ``mu`` (D,) and
``sigma`` (D, D), e.g. MS-COCO 2014 validation images as written by pytorch-fid ``--save-stats`` or clean-fid.
Feature statistics are kept as sums (count, sum, sum of outer products), so shards merge exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefusion.errors import EdgeFusionError

INCEPTION_FLAG = "--fid-inception"
STATS_FLAG = "--fid-ref-stats"
_HOW_NET = (f"pass {INCEPTION_FLAG} FILE: a TorchScript feature network such as inception-2015-12-05.pt (the one "
            "StyleGAN3 and clean-fid use)")
_HOW_STATS = (f"pass {STATS_FLAG} FILE: an .npz with mu and sigma of the reference images' features (e.g. MS-COCO "
              "val2014 statistics from pytorch-fid --save-stats or clean-fid, made with the same feature network)")


def check_fid_files(inception: str | Path | None, ref_stats: str | Path | None) -> tuple[Path, Path | None]:
    """The feature network (required for FID) and reference statistics (optional: without them FID is only
    measured against the float reference images). Errors name the missing file and the flag."""
    if inception is None:
        raise EdgeFusionError("FID needs a feature network file and none was given", _HOW_NET)
    net = Path(inception).expanduser()
    if not net.is_file():
        raise EdgeFusionError(f"FID feature network '{net}' does not exist", _HOW_NET)
    stats = None
    if ref_stats is not None:
        stats = Path(ref_stats).expanduser()
        if not stats.is_file():
            raise EdgeFusionError(f"FID reference statistics '{stats}' do not exist", _HOW_STATS)
        stats = stats.resolve()
    return net.resolve(), stats


class FeatureNet:
    """The user's TorchScript feature network (CPU)."""

    def __init__(self, path: str | Path):
        """Load ``path`` with ``torch.jit.load`` (a file that is not TorchScript is a one-line error)."""
        import torch

        self.path = Path(path)
        try:
            self.net = torch.jit.load(str(self.path), map_location="cpu").eval()
        except Exception as err:  # not TorchScript, truncated, ...: the user's file, reported in one line
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise EdgeFusionError(f"FID feature network '{self.path}' is not a loadable TorchScript file ({first})",
                                  _HOW_NET) from None

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        """(N, D) float64 features of HxWx3 images in [0, 1]."""
        import torch

        batch = np.stack([(np.clip(im, 0, 1) * 255).round().astype(np.uint8) for im in images])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()
        with torch.no_grad():
            feats = self.net(x, return_features=True)
        return np.asarray(feats.detach().double().numpy()).reshape(len(images), -1)


@dataclass
class FeatureStats:
    """Sufficient statistics of a feature set: count, sum and sum of outer products (float64)."""

    n: int
    total: np.ndarray
    outer: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray) -> FeatureStats:
        """Statistics of an (N, D) feature array."""
        f = np.asarray(features, np.float64)
        return cls(len(f), f.sum(0), f.T @ f)

    def merged(self, other: FeatureStats) -> FeatureStats:
        """Statistics of the union of both sets."""
        if self.total.shape != other.total.shape:
            raise EdgeFusionError(f"feature statistics of different widths ({self.total.shape[0]} vs "
                                  f"{other.total.shape[0]}) cannot be merged", "use one feature network for all shards")
        return FeatureStats(self.n + other.n, self.total + other.total, self.outer + other.outer)

    def mu_sigma(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased covariance (needs at least 2 samples)."""
        mu = self.total / self.n
        return mu, (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)

    def save(self, path: str | Path) -> None:
        """Write as ``.npz``."""
        np.savez(path, n=np.int64(self.n), total=self.total, outer=self.outer)

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        """Inverse of :meth:`save`."""
        with np.load(path) as d:
            return cls(int(d["n"]), d["total"], d["outer"])


def load_reference_stats(path: str | Path, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``mu``, ``sigma`` from an ``.npz``; checked against the feature width when given."""
    try:
        with np.load(path) as d:
            if not {"mu", "sigma"} <= set(d.files):
                raise EdgeFusionError(f"FID reference statistics '{path}' hold {sorted(d.files)}, not mu and sigma",
                                      _HOW_STATS)
            mu, sigma = np.asarray(d["mu"], np.float64), np.asarray(d["sigma"], np.float64)
    except (OSError, ValueError) as err:
        raise EdgeFusionError(f"FID reference statistics '{path}' are not a readable .npz ({err})",
                              _HOW_STATS) from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]) or (width is not None and mu.shape[0] != width):
        raise EdgeFusionError(f"FID reference statistics '{path}' have mu {mu.shape} and sigma {sigma.shape}, "
                              f"which do not fit features of width {width}",
                              "use statistics made with the same feature network")
    return mu, sigma


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance of two Gaussians, ``|mu1 - mu2|^2 + Tr(s1 + s2 - 2 sqrt(s1 s2))``, with scipy's matrix square
    root and pytorch-fid's regularisation when the product is singular; rounding below zero is reported as 0."""
    import warnings

    from scipy import linalg

    diff = mu1 - mu2
    with warnings.catch_warnings():  # few samples give singular covariances; handled below as pytorch-fid does
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * 1e-6
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    return max(0.0, float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)))
