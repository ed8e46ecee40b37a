"""Which weight-dependent metrics a run asks for, and the local files they need (checked before any work)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgefusion.errors import EdgeFusionError
from edgefusion.evaluation.clip_score import check_clip_folder
from edgefusion.evaluation.fid import STATS_FLAG, check_fid_files


@dataclass
class MetricOptions:
    """CLIP score and FID are computed only when asked for (``clip``/``fid``) or when their files are given.
    ``coco`` is the EdgeFusion/BK-SDM protocol: CLIP score and FID against MS-COCO reference statistics, so
    all three files are required."""

    clip: bool = False
    fid: bool = False
    coco: bool = False
    clip_model: str | Path | None = None
    fid_inception: str | Path | None = None
    fid_ref_stats: str | Path | None = None

    def resolve(self) -> dict[str, Path | None]:
        """Check the files; returns ``{"clip_model", "fid_inception", "fid_ref_stats"}`` (``None`` = not used)."""
        want_clip = self.clip or self.coco or self.clip_model is not None
        want_fid = self.fid or self.coco or self.fid_inception is not None or self.fid_ref_stats is not None
        out: dict[str, Path | None] = {"clip_model": None, "fid_inception": None, "fid_ref_stats": None}
        if want_clip:
            out["clip_model"] = check_clip_folder(self.clip_model)
        if want_fid:
            out["fid_inception"], out["fid_ref_stats"] = check_fid_files(self.fid_inception, self.fid_ref_stats)
        if self.coco and out["fid_ref_stats"] is None:
            raise EdgeFusionError("the COCO protocol needs FID reference statistics and none were given",
                                  f"pass {STATS_FLAG} FILE: an .npz with mu and sigma of MS-COCO val2014 features "
                                  "(pytorch-fid --save-stats or clean-fid), made with the same feature network")
        return out
