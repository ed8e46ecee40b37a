"""``manifest.json``: what one export did and how close each graph is to the float model."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class ComponentRecord:
    """One exported graph: files, precision counts, QDQ counts and verification figures."""

    file: str
    bytes: int
    layers: dict[str, dict[str, int]]  # op type -> precision -> count
    plan: dict[str, int | list[str]]  # QuantPlan.summary(): counts, and the promoted layers by name
    node_counts: dict[str, int]  # QuantizeLinear / DequantizeLinear / Cast in the written graph
    qdq_by_op_type: dict[str, dict[str, int]]  # layer op type -> {"8": n, "16": n} activation QDQ pairs it owns
    float_vs_torch_sqnr_db: float
    quant_vs_torch_sqnr_db: float
    quant_vs_float_sqnr_db: float
    verify_samples: int
    tiling: dict = field(default_factory=dict)  # tiled sites, tiled-vs-untiled SQNR and max |diff|
    partition: dict = field(default_factory=dict)  # sub-graph files, cuts, sizes, chained-vs-whole SQNR
    ranges: dict = field(default_factory=dict)  # calibration method, its range factors and what they were chosen on
    deploy_form: dict = field(default_factory=dict)  # structural passes applied (folded casts, int32 ids, shapes)
    client: dict = field(default_factory=dict)  # the batch-dynamic client graph (UNet) and its check vs the NPU graph
    weight_rounding: dict = field(default_factory=dict)  # int8 weights rounded by GPTQ (layers, of, samples) or nearest


@dataclass
class ExportManifest:
    """The whole export; JSON round-trippable."""

    edgefusion_version: str
    versions: dict[str, str]
    created: str
    source: dict
    policy: dict
    device: str
    calibration: dict
    shapes: dict
    components: dict[str, ComponentRecord] = field(default_factory=dict)
    end_to_end: dict = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    peak_rss_after_stage_mb: dict[str, float] = field(default_factory=dict)  # where the peak grew
    latency: dict | None = None  # LatencyReport.summary() for the device (full detail in latency.json)
    tiling: dict = field(default_factory=dict)  # {"enabled": bool, "sites": {component/softmax node: decision}}
    qnn: dict | None = None  # Qualcomm QNN HTP compilation and emulated verification (edgefusion[qnn])
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # every warning the run printed: failed fidelity checks,
    # policy rules that match no layer, prompts the tokenizer cuts ... (each an error under --strict)
    strict: bool = False  # --strict: the run would have failed on any warning

    def to_dict(self) -> dict:
        """Plain-dict form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ExportManifest":
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["components"] = {k: ComponentRecord(**v) for k, v in d.get("components", {}).items()}
        return cls(**d)

    def save(self, path: str | Path) -> None:
        """Write JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ExportManifest":
        """Read JSON (a folder is read as ``<folder>/manifest.json``)."""
        path = Path(path)
        if path.is_dir():
            path = path / "manifest.json"
        return cls.from_dict(json.loads(path.read_text()))
