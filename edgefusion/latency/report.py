"""The latency report: per kernel, per block, per component and per image; JSON round trip and a text view."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgefusion.latency.cost_model import GraphCost

MB = 1e6


@dataclass
class ComponentLatency:
    """One component (all its sub-graphs) for one call."""

    ms: float
    calls: int  # per image
    graphs: int
    gmacs: float
    weight_mb: float
    dram_mb: float
    peak_sram_mb: float
    kernels: int
    spilled_kernels: int
    by_category_ms: dict[str, float]
    by_block_ms: dict[str, float]
    kernel_table: list[dict] = field(default_factory=list)  # per (fused) kernel: name, category, ms, ...
    compute_bound_ms: float = 0.0  # physical limit: NPU compute at the engines' peak
    dram_bound_ms: float = 0.0  # physical limit: weights, inputs and outputs once at the published DRAM bandwidth
    host_ms: float = 0.0  # work on the host CPU (fallback operators)
    fallbacks: int = 0  # mid-graph CPU fallbacks per call

    @property
    def limit_ms(self) -> float:
        """The physical limit of one call: the larger of the compute and the DRAM bound."""
        return max(self.compute_bound_ms, self.dram_bound_ms)

    @classmethod
    def from_costs(cls, costs: list[GraphCost], calls: int, keep_kernels: bool = True) -> "ComponentLatency":
        """Sum the per-graph costs of one component."""
        kernels = [k for c in costs for k in c.kernels]
        by_cat: dict[str, float] = {}
        by_block: dict[str, float] = {}
        for k in kernels:
            by_cat[k.category] = by_cat.get(k.category, 0.0) + k.ms
            by_block[k.block or "(top level)"] = by_block.get(k.block or "(top level)", 0.0) + k.ms
        table = [{"name": k.name, "category": k.category, "precision": k.precision, "block": k.block,
                  "ms": round(k.ms, 4), "compute_ms": round(k.compute_ms, 4), "dram_ms": round(k.dram_ms, 4),
                  "dram_bytes": k.dram_bytes, "macs": k.macs, "spilled": k.spilled, "fused_ops": len(k.ops),
                  "engine": k.engine, "overhead_ms": round(k.overhead_ms, 4)}
                 for k in kernels] if keep_kernels else []
        return cls(ms=round(sum(c.ms for c in costs), 3), calls=calls, graphs=len(costs),
                   gmacs=round(sum(c.macs for c in costs) / 1e9, 3),
                   weight_mb=round(sum(c.weight_bytes for c in costs) / MB, 2),
                   dram_mb=round(sum(c.dram_bytes for c in costs) / MB, 2),
                   peak_sram_mb=round(max(c.peak_sram_bytes for c in costs) / MB, 3), kernels=len(kernels),
                   spilled_kernels=sum(1 for k in kernels if k.spilled),
                   by_category_ms={k: round(v, 3) for k, v in sorted(by_cat.items(), key=lambda x: -x[1])},
                   by_block_ms={k: round(v, 3) for k, v in sorted(by_block.items(), key=lambda x: -x[1])},
                   kernel_table=table, compute_bound_ms=round(sum(c.compute_bound_ms for c in costs), 3),
                   dram_bound_ms=round(sum(c.dram_bound_ms for c in costs), 3),
                   host_ms=round(sum(c.host_ms for c in costs), 3), fallbacks=sum(c.fallbacks for c in costs))


@dataclass
class LatencyReport:
    """Estimated latency of one image on one device."""

    device: str
    backend: str
    source: str
    policy: str
    steps: int
    guidance: bool  # classifier-free guidance doubles text-encoder and UNet calls
    tiled: bool
    total_ms: float
    components: dict[str, ComponentLatency]
    tiling: dict = field(default_factory=dict)  # attention sites -> chosen query block
    notes: list[str] = field(default_factory=list)

    @classmethod
    def combine(cls, device: str, backend: str, source: str, policy: str, steps: int, guidance: bool,
                tiled: bool, components: dict[str, ComponentLatency], tiling: dict | None = None,
                notes: list[str] | None = None) -> "LatencyReport":
        """Build the report; ``total_ms`` = sum over components of per-call ms x calls."""
        total = sum(c.ms * c.calls for c in components.values())
        return cls(device, backend, source, policy, steps, guidance, tiled, round(total, 3), components,
                   tiling or {}, notes or [])

    def summary(self) -> dict:
        """Compact form for the export manifest (no per-kernel table)."""
        d = self.to_dict()
        for c in d["components"].values():
            c.pop("kernel_table", None)
            c["by_block_ms"] = dict(list(c["by_block_ms"].items())[:12])
        return d

    def to_dict(self) -> dict:
        """Plain-dict form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LatencyReport":
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["components"] = {k: ComponentLatency(**v) for k, v in d["components"].items()}
        return cls(**d)

    def save(self, path: str | Path) -> None:
        """Write JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "LatencyReport":
        """Read JSON."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def format(self, top: int = 8) -> str:
        """A readable breakdown."""
        cfg = " x2 (CFG)" if self.guidance else ""
        lines = [f"device {self.device} ({self.backend} backend), model {self.source}, policy {self.policy}, "
                 f"{self.steps} steps{cfg}, attention tiling {'on' if self.tiled else 'off'}",
                 f"{'component':<14}{'ms/call':>10}{'calls':>7}{'ms/image':>10}{'GMAC':>9}{'weights MB':>12}"
                 f"{'DRAM MB':>10}{'SRAM peak MB':>14}{'graphs':>8}"]
        for name, c in self.components.items():
            lines.append(f"{name:<14}{c.ms:>10.1f}{c.calls:>7}{c.ms * c.calls:>10.1f}{c.gmacs:>9.1f}"
                         f"{c.weight_mb:>12.1f}{c.dram_mb:>10.1f}{c.peak_sram_mb:>14.2f}{c.graphs:>8}")
        lines.append(f"{'per image':<14}{'':>10}{'':>7}{self.total_ms:>10.1f}")
        for name, c in self.components.items():
            cats = ", ".join(f"{k} {v:.1f}" for k, v in list(c.by_category_ms.items())[:6])
            lines.append(f"{name} by op type (ms/call): {cats}")
            blocks = ", ".join(f"{k} {v:.1f}" for k, v in list(c.by_block_ms.items())[:top])
            lines.append(f"{name} slowest blocks (ms/call): {blocks}")
            if c.limit_ms > 0:
                host = f"; host CPU {c.host_ms:.1f} ms, {c.fallbacks} fallback(s)" if c.host_ms or c.fallbacks else ""
                lines.append(f"{name} physical limit: compute at peak {c.compute_bound_ms:.2f} ms, DRAM at full "
                             f"bandwidth {c.dram_bound_ms:.2f} ms: estimate is {c.ms / c.limit_ms:.1f}x the limit{host}")
        if self.tiling:
            lines.append(f"attention tiling: {len(self.tiling)} sites tiled (heads x query rows per tile, tiles, ms "
                         f"untiled -> tiled, per call):")
            for site, d in list(self.tiling.items())[:top]:
                shape = f"{d.get('heads', '?')}x{d.get('block', '?')}"
                lines.append(f"  {site}: {shape}, {d.get('tiles', '?')} tiles, {d.get('ms_untiled', 0):.3f} -> "
                             f"{d.get('ms_tiled', 0):.3f} ms")
            if len(self.tiling) > top:
                lines.append(f"  ... {len(self.tiling) - top} more (--json lists all)")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)
