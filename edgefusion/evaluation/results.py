"""Typed evaluation results, JSON round-trippable: what was run (``EvalSpec``), one record per generated image
(``ImageRecord``), and the whole result of a run or of merged shards (``EvalResult``, ``results.json``)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgefusion.errors import EdgeFusionError
from edgefusion.evaluation.prompts import PromptSet
from edgefusion.evaluation.variants import Variant

RESULTS_FILE = "results.json"
FORMAT = 1


def _finite(x):
    """JSON has no NaN/inf: non-finite floats are written as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


@dataclass
class ImageRecord:
    """One generated image and its metrics against the PyTorch float image of the same prompt and seed
    (``None``/empty for the reference itself, or where a metric was not asked for)."""

    prompt_index: int
    seed: int
    image: str  # path relative to the evaluation folder
    psnr_db: float | None = None
    ssim: float | None = None
    noise_sqnr_db: list[float] = field(default_factory=list)  # per denoising step
    latent_psnr_db: list[float] = field(default_factory=list)  # per denoising step
    attributes: dict[str, bool] | None = None  # analyser reading matches the prompt (shapes captions only)
    clip_score: float | None = None


@dataclass
class EvalSpec:
    """Everything that must be equal for shards to merge (paths excepted)."""

    model: dict  # the manifests' ``source``
    shapes: dict
    prompts: PromptSet
    seed: int
    steps: int
    guidance_scale: float
    variants: list[Variant]
    metrics: dict  # {"clip": bool, "fid": bool, "fid_ref_stats": bool, "attributes": bool}
    timesteps: list[float] = field(default_factory=list)
    metric_files: dict = field(default_factory=dict)  # where the CLIP / FID files were (not compared on merge)

    def fingerprint(self) -> dict:
        """The comparable part: no file locations, only contents and settings."""
        return {"model": self.model, "shapes": self.shapes, "prompts": self.prompts.digest(),
                "n_prompts": len(self.prompts.prompts), "seed": self.seed, "steps": self.steps,
                "guidance_scale": self.guidance_scale, "metrics": self.metrics,
                "variants": [(v.key, v.kind, v.identity) for v in self.variants]}

    def to_dict(self) -> dict:
        """Plain-dict form."""
        d = asdict(self)
        d["prompts"] = self.prompts.to_dict()
        d["variants"] = [v.to_dict() for v in self.variants]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EvalSpec:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["prompts"] = PromptSet.from_dict(d["prompts"])
        d["variants"] = [Variant.from_dict(v) for v in d["variants"]]
        return cls(**d)


@dataclass
class EvalResult:
    """A run over one shard of the prompt set, or several shards merged (``shards`` lists which)."""

    spec: EvalSpec
    shard_count: int
    shards: list[int]
    records: dict[str, list[ImageRecord]]  # variant key -> records in prompt order
    notes: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)  # filled by evaluation.summary.summarise
    format: int = FORMAT

    @property
    def complete(self) -> bool:
        """True when every shard of the prompt set is in."""
        return sorted(self.shards) == list(range(1, self.shard_count + 1))

    def to_dict(self) -> dict:
        """Plain-dict form (non-finite numbers as null)."""
        return _finite({"format": self.format, "spec": self.spec.to_dict(), "shard_count": self.shard_count,
                        "shards": self.shards, "notes": self.notes, "timings_s": self.timings_s,
                        "summary": self.summary,
                        "records": {k: [asdict(r) for r in v] for k, v in self.records.items()}})

    @classmethod
    def from_dict(cls, d: dict) -> EvalResult:
        """Inverse of :meth:`to_dict`."""
        return cls(spec=EvalSpec.from_dict(d["spec"]), shard_count=d["shard_count"], shards=list(d["shards"]),
                   records={k: [ImageRecord(**r) for r in v] for k, v in d["records"].items()},
                   notes=list(d.get("notes", [])), timings_s=dict(d.get("timings_s", {})),
                   summary=dict(d.get("summary", {})), format=d.get("format", FORMAT))

    def save(self, folder: str | Path) -> Path:
        """Write ``<folder>/results.json``."""
        path = Path(folder) / RESULTS_FILE
        path.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> EvalResult:
        """Read ``<folder>/results.json`` (one-line error when the folder is not an evaluation)."""
        path = Path(folder) / RESULTS_FILE
        if not path.is_file():
            raise EdgeFusionError(f"'{folder}' has no {RESULTS_FILE}, so it is not an edgefusion evaluation",
                                  "pass folders written by eval/evaluate.py")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            if d.get("format") != FORMAT:
                raise ValueError(f"format {d.get('format')}, expected {FORMAT}")
            return cls.from_dict(d)
        except (ValueError, KeyError, TypeError) as err:
            raise EdgeFusionError(f"'{path}' is not a readable evaluation result ({type(err).__name__}: {err})",
                                  "re-run eval/evaluate.py for that shard") from None
