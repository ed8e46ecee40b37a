"""NPU device profiles: hardware figures as plain data (``configs/devices/*.yaml``), validated on load."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from edgefusion.errors import EdgeFusionError
from edgefusion.resources import config_dir, shipped_names

PRECISIONS = ("W8A8", "W8A16", "FP16")
ENGINES = ("tensor_engine", "vector_engine")
# the numeric fields every profile must give, with their section; all must be finite and > 0
REQUIRED = {
    "tensor_engine": ("macs_per_cycle", "clock_mhz", "efficiency"),
    "vector_engine": ("lanes", "clock_mhz", "efficiency"),
    "memory": ("sram_mb", "dram_gb_per_s", "dram_efficiency"),
    "overheads": ("per_node_us", "per_tile_us", "per_graph_us"),
    "limits": ("max_graph_weight_mb", "max_graph_memory_mb"),
}
FRACTIONS = {("tensor_engine", "efficiency"), ("vector_engine", "efficiency"), ("memory", "dram_efficiency")}
ZERO_ALLOWED = {("overheads", "per_node_us"), ("overheads", "per_tile_us"), ("overheads", "per_graph_us")}


@dataclass
class DeviceProfile:
    """One NPU: engines, memory, overheads, per-graph limits, precision support and throughput."""

    name: str
    description: str
    tensor_engine: dict[str, float]
    vector_engine: dict[str, float]
    memory: dict[str, float]
    overheads: dict[str, float]
    limits: dict[str, float]
    throughput: dict[str, dict[str, float]]
    op_precisions: dict[str, list[str]]
    vector_ops_per_element: dict[str, float]
    source: str = ""
    extra: dict = field(default_factory=dict)

    # derived figures, in SI units
    @property
    def tensor_macs_per_s(self) -> float:
        """Sustained MAC/s of the tensor engines at their top precision (peak x efficiency)."""
        te = self.tensor_engine
        return te["macs_per_cycle"] * te["clock_mhz"] * 1e6 * te["efficiency"]

    @property
    def vector_ops_per_s(self) -> float:
        """Sustained element operations/s of the vector engines at their top precision."""
        ve = self.vector_engine
        return ve["lanes"] * ve["clock_mhz"] * 1e6 * ve["efficiency"]

    @property
    def dram_bytes_per_s(self) -> float:
        """Sustained DRAM bandwidth in bytes/s."""
        return self.memory["dram_gb_per_s"] * 1e9 * self.memory["dram_efficiency"]

    @property
    def sram_bytes(self) -> float:
        """On-chip scratchpad size in bytes."""
        return self.memory["sram_mb"] * 2**20

    def rate(self, engine: str, op_category: str, precision: str) -> tuple[float, str]:
        """Relative throughput of ``precision`` for an op category on ``engine``, and the precision it runs in.

        A precision the device does not list for the op is run in the slowest precision it does list.
        """
        allowed = self.op_precisions.get(op_category) or self.op_precisions["_elementwise"]
        table = self.throughput[engine]
        if precision in allowed and precision in table:
            return table[precision], precision
        slowest = min(allowed, key=lambda p: table.get(p, math.inf))
        return table[slowest], slowest

    def ops_per_element(self, op_category: str) -> float:
        """Vector-engine operations per output element of an op category."""
        return float(self.vector_ops_per_element.get(op_category, self.vector_ops_per_element["_elementwise"]))

    def with_overrides(self, **limits: float | None) -> "DeviceProfile":
        """A copy with some ``limits`` replaced (``None`` values are ignored); validated."""
        data = self.to_dict()
        data["limits"] = {**data["limits"], **{k: v for k, v in limits.items() if v is not None}}
        return DeviceProfile.from_dict(data, where=f"device '{self.name}' with overrides")

    def to_dict(self) -> dict:
        """Plain-dict form (the YAML layout)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object, where: str = "device profile") -> "DeviceProfile":
        """Validate and build; any missing field or nonsense value raises a one-line error naming it."""
        if not isinstance(data, dict):
            raise EdgeFusionError(f"{where} is not a mapping", "see configs/devices/generic.yaml for the format")
        missing = [s for s in ("name", *REQUIRED, "throughput", "op_precisions", "vector_ops_per_element")
                   if s not in data]
        if missing:
            raise EdgeFusionError(f"{where} lacks the section(s) {', '.join(missing)}",
                                  "copy configs/devices/generic.yaml and fill in every section")
        for section, keys in REQUIRED.items():
            sec = data[section]
            if not isinstance(sec, dict):
                raise EdgeFusionError(f"{where}: '{section}' must be a mapping", "see configs/devices/generic.yaml")
            for key in keys:
                if key not in sec:
                    raise EdgeFusionError(f"{where} lacks {section}.{key}", "add it (see configs/devices/generic.yaml)")
                value = sec[key]
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                floor_ok = ok and (value >= 0 if (section, key) in ZERO_ALLOWED else value > 0)
                if not floor_ok or ((section, key) in FRACTIONS and value > 1):
                    want = "a number in (0, 1]" if (section, key) in FRACTIONS else (
                        "a number >= 0" if (section, key) in ZERO_ALLOWED else "a positive number")
                    raise EdgeFusionError(f"{where}: {section}.{key} = {value!r} is not {want}",
                                          f"set {section}.{key} to {want}")
        throughput = data["throughput"]
        if not isinstance(throughput, dict) or set(throughput) != set(ENGINES):
            raise EdgeFusionError(f"{where}: throughput must map exactly {', '.join(ENGINES)} to precision rates",
                                  "see configs/devices/generic.yaml")
        for engine, table in throughput.items():
            if not isinstance(table, dict) or not table:
                raise EdgeFusionError(f"{where}: throughput.{engine} must map precisions to relative rates",
                                      "e.g. {W8A8: 1.0, W8A16: 0.5, FP16: 0.25}")
            for prec, value in table.items():
                if prec not in PRECISIONS:
                    raise EdgeFusionError(f"{where}: throughput.{engine} names unknown precision '{prec}'",
                                          f"use {', '.join(PRECISIONS)}")
                if not isinstance(value, (int, float)) or not 0 < value <= 1:
                    raise EdgeFusionError(f"{where}: throughput.{engine}.{prec} = {value!r} is not in (0, 1]",
                                          "give the rate relative to the engine's peak")
        ops = data["op_precisions"]
        if not isinstance(ops, dict) or "_elementwise" not in ops:
            raise EdgeFusionError(f"{where}: op_precisions needs an '_elementwise' entry",
                                  "list the precisions plain elementwise ops may take")
        for op, precs in ops.items():
            if not isinstance(precs, list) or not precs or any(p not in PRECISIONS for p in precs):
                raise EdgeFusionError(f"{where}: op_precisions.{op} must be a non-empty list of {PRECISIONS}",
                                      "e.g. [W8A8, W8A16, FP16]")
            for engine in ENGINES:
                if not any(p in throughput[engine] for p in precs):
                    raise EdgeFusionError(f"{where}: no throughput.{engine} rate for any precision of {op}",
                                          f"add one of {precs} to throughput.{engine}")
        vope = data["vector_ops_per_element"]
        if not isinstance(vope, dict) or "_elementwise" not in vope or any(
                not isinstance(v, (int, float)) or v <= 0 for v in vope.values()):
            raise EdgeFusionError(f"{where}: vector_ops_per_element must map op types to positive numbers and "
                                  "include '_elementwise'", "see configs/devices/generic.yaml")
        known = {"name", "description", "source", "extra", *REQUIRED, "throughput", "op_precisions",
                 "vector_ops_per_element"}
        unknown = set(data) - known
        if unknown:
            raise EdgeFusionError(f"{where} has unknown keys {sorted(unknown)}", f"allowed: {sorted(known)}")
        return cls(name=str(data["name"]), description=str(data.get("description", "")),
                   tensor_engine=dict(data["tensor_engine"]), vector_engine=dict(data["vector_engine"]),
                   memory=dict(data["memory"]), overheads=dict(data["overheads"]), limits=dict(data["limits"]),
                   throughput={e: dict(t) for e, t in throughput.items()},
                   op_precisions={k: list(v) for k, v in ops.items()},
                   vector_ops_per_element={k: float(v) for k, v in vope.items()},
                   source=str(data.get("source", "")), extra=dict(data.get("extra") or {}))

    def save(self, path: str | Path) -> None:
        """Write as JSON (readable by :func:`load_device` like YAML)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")


def device_names() -> list[str]:
    """Names of the shipped device profiles."""
    return shipped_names("devices", ".yaml")


def load_device(name_or_path: str) -> DeviceProfile:
    """A shipped profile by name (``exynos2400``) or a YAML/JSON file path; validated."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml", ".json") and path.is_file()):
        if path.suffix in (".yaml", ".yml", ".json"):
            raise EdgeFusionError(f"device profile file '{name_or_path}' does not exist",
                                  "pass an existing YAML file or one of " + ", ".join(device_names()))
        path = config_dir("devices") / f"{name_or_path}.yaml"
        if not path.is_file():
            raise EdgeFusionError(f"unknown device '{name_or_path}'",
                                  f"use one of {', '.join(device_names())} or a path to a profile YAML")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EdgeFusionError(f"device profile '{path}' is not valid YAML ({first})", "fix the file") from None
    return DeviceProfile.from_dict(data, where=f"device profile '{path.name}'")
