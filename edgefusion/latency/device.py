"""NPU device profiles: hardware figures as plain data (``configs/devices/*.yaml``), validated on load."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from edgefusion.errors import EdgeFusionError
from edgefusion.latency.profile_schema import ENGINES, PRECISIONS, validate_profile
from edgefusion.quant.storage import StorageNeeds
from edgefusion.resources import config_dir, shipped_names

__all__ = ["DeviceProfile", "device_names", "load_device", "PRECISIONS", "ENGINES"]


@dataclass
class DeviceProfile:
    """One NPU: engines, memory, overheads, the host CPU that runs what the NPU cannot, per-graph limits,
    precision support and throughput."""

    name: str
    description: str
    tensor_engine: dict[str, float]
    vector_engine: dict[str, float]
    memory: dict[str, float]
    overheads: dict[str, float]
    host: dict
    limits: dict[str, float]
    throughput: dict[str, dict[str, float]]
    op_precisions: dict[str, list[str]]
    vector_ops_per_element: dict[str, float]
    source: str = ""
    extra: dict = field(default_factory=dict)
    # weight storage the device needs: op types whose int8 weights are per-tensor when their input is 16-bit
    weights: dict = field(default_factory=lambda: {"per_tensor_with_16bit_activations": []})
    # activation storage the device needs: op types whose second input is int16 when both inputs are 16-bit
    activations: dict = field(default_factory=lambda: {"signed_16bit_second_input": []})

    # derived figures, in SI units
    @property
    def tensor_peak_macs_per_s(self) -> float:
        """Peak MAC/s of the tensor engines at their top precision."""
        return self.tensor_engine["macs_per_cycle"] * self.tensor_engine["clock_mhz"] * 1e6

    @property
    def tensor_macs_per_s(self) -> float:
        """Sustained MAC/s of the tensor engines at their top precision (peak x efficiency)."""
        return self.tensor_peak_macs_per_s * self.tensor_engine["efficiency"]

    @property
    def vector_peak_ops_per_s(self) -> float:
        """Peak element operations/s of the vector engines at their top precision."""
        return self.vector_engine["lanes"] * self.vector_engine["clock_mhz"] * 1e6

    @property
    def vector_ops_per_s(self) -> float:
        """Sustained element operations/s of the vector engines at their top precision."""
        return self.vector_peak_ops_per_s * self.vector_engine["efficiency"]

    @property
    def dram_peak_bytes_per_s(self) -> float:
        """DRAM bandwidth in bytes/s as published."""
        return self.memory["dram_gb_per_s"] * 1e9

    @property
    def dram_bytes_per_s(self) -> float:
        """Sustained DRAM bandwidth of the NPU's DMA in bytes/s."""
        return self.dram_peak_bytes_per_s * self.memory["dram_efficiency"]

    @property
    def sram_bytes(self) -> float:
        """On-chip scratchpad size in bytes."""
        return self.memory["sram_mb"] * 2**20

    @property
    def host_flops_per_s(self) -> float:
        """Sustained FLOP/s of the host CPU on fallback operators."""
        return self.host["gflops"] * 1e9

    @property
    def host_bytes_per_s(self) -> float:
        """Host CPU memory bandwidth in bytes/s."""
        return self.host["gb_per_s"] * 1e9

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

    def runs_on_host(self, op_type: str, precision: str) -> bool:
        """Whether the NPU compiler hands this op to the host CPU: an op type it does not support, or FP32
        (no NPU precision)."""
        return op_type in self.host["ops"] or precision not in PRECISIONS

    def storage_needs(self) -> StorageNeeds:
        """What the device needs of the stored integer tensors (its ``weights`` and ``activations`` sections), as
        the quantizer takes it."""
        return StorageNeeds(self.weights["per_tensor_with_16bit_activations"],
                            self.activations["signed_16bit_second_input"])

    def with_overrides(self, **limits: float | None) -> "DeviceProfile":
        """A copy with some ``limits`` replaced (``None`` values are ignored); validated."""
        data = self.to_dict()
        data["limits"] = {**data["limits"], **{k: v for k, v in limits.items() if v is not None}}
        return DeviceProfile.from_dict(data, where=f"device '{self.name}' with overrides")

    def with_figures(self, figures: dict[str, float]) -> "DeviceProfile":
        """A copy with ``{"section.key": value}`` figures replaced; validated (used by the calibration)."""
        data = self.to_dict()
        for dotted, value in figures.items():
            section, key = dotted.split(".", 1)
            data[section][key] = value
        return DeviceProfile.from_dict(data, where=f"device '{self.name}' with {', '.join(figures)}")

    def to_dict(self) -> dict:
        """Plain-dict form (the YAML layout)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: object, where: str = "device profile") -> "DeviceProfile":
        """Validate and build; any missing field or nonsense value raises a one-line error naming it."""
        clean = validate_profile(data, where)
        return cls(**clean)

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
