"""What a device profile must hold, and the check that refuses anything else with the field named.

Every number must be a real, finite number (YAML ``.nan``, ``.inf``, booleans and strings are refused); each field
says its range. Sections are closed: an unknown (e.g. misspelt) key is refused rather than silently ignored.
"""

from __future__ import annotations

import math

from edgefusion.errors import EdgeFusionError

PRECISIONS = ("W8A8", "W8A16", "FP16")
ENGINES = ("tensor_engine", "vector_engine")
FORMAT = "see configs/devices/generic.yaml for the format"

# range of each figure: "pos" > 0, "nonneg" >= 0, "fraction" in (0, 1], "ops" a list of ONNX op types
FIELDS: dict[str, dict[str, str]] = {
    "tensor_engine": {"macs_per_cycle": "pos", "clock_mhz": "pos", "efficiency": "fraction"},
    "vector_engine": {"lanes": "pos", "clock_mhz": "pos", "efficiency": "fraction"},
    "memory": {"sram_mb": "pos", "dram_gb_per_s": "pos", "dram_efficiency": "fraction"},
    "overheads": {"per_node_us": "nonneg", "per_tile_us": "nonneg", "handoff_us": "nonneg", "per_graph_us": "nonneg"},
    "host": {"gflops": "pos", "gb_per_s": "pos", "fallback_us": "nonneg", "ops": "ops"},
    "limits": {"max_graph_weight_mb": "pos", "max_graph_memory_mb": "pos"},
}
WANT = {"pos": "a positive finite number", "nonneg": "a finite number >= 0", "fraction": "a number in (0, 1]"}
TABLES = ("throughput", "op_precisions", "vector_ops_per_element")
# optional: how the device needs weights stored (absent = per-channel int8 weights everywhere)
WEIGHTS = {"per_tensor_with_16bit_activations": "ops"}
# optional: how the device needs activations stored (absent = uint8/uint16 asymmetric everywhere)
ACTIVATIONS = {"signed_16bit_second_input": "ops"}
TOP = {"name", "description", "source", "extra", "weights", "activations", *FIELDS, *TABLES}


def is_number(value: object) -> bool:
    """A real, finite int or float (not a bool, not a string)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_number(value: object, kind: str, label: str, where: str) -> float:
    ok = is_number(value) and (value > 0 if kind in ("pos", "fraction") else value >= 0) and \
        (kind != "fraction" or value <= 1)
    if not ok:
        raise EdgeFusionError(f"{where}: {label} = {value!r} is not {WANT[kind]}", f"set {label} to {WANT[kind]}")
    return float(value)


def _mapping(value: object, label: str, where: str) -> dict:
    if not isinstance(value, dict):
        raise EdgeFusionError(f"{where}: '{label}' must be a mapping", FORMAT)
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise EdgeFusionError(f"{where}: '{label}' has a key that is not a name ({bad[0]!r})", FORMAT)
    return value


def _sections(data: dict, where: str) -> dict:
    out = {}
    for section, fields in FIELDS.items():
        sec = _mapping(data[section], section, where)
        unknown = sorted(set(sec) - set(fields))
        if unknown:
            raise EdgeFusionError(f"{where}: {section} has unknown key(s) {unknown}",
                                  f"allowed in {section}: {sorted(fields)}")
        out[section] = {}
        for key, kind in fields.items():
            if key not in sec:
                raise EdgeFusionError(f"{where} lacks {section}.{key}", "add it (see configs/devices/generic.yaml)")
            if kind == "ops":
                ops = sec[key]
                if not isinstance(ops, list) or not all(isinstance(o, str) and o for o in ops):
                    raise EdgeFusionError(f"{where}: {section}.{key} must be a list of ONNX op type names",
                                          "e.g. [IsNaN, Sin, Cos] (an empty list [] when every op runs on the NPU)")
                out[section][key] = list(ops)
            else:
                out[section][key] = _check_number(sec[key], kind, f"{section}.{key}", where)
    return out


def _throughput(data: dict, where: str) -> dict:
    table = _mapping(data["throughput"], "throughput", where)
    if set(table) != set(ENGINES):
        raise EdgeFusionError(f"{where}: throughput must map exactly {', '.join(ENGINES)} to precision rates", FORMAT)
    out = {}
    for engine in ENGINES:
        rates = _mapping(table[engine], f"throughput.{engine}", where)
        if not rates:
            raise EdgeFusionError(f"{where}: throughput.{engine} must map precisions to relative rates",
                                  "e.g. {W8A8: 1.0, W8A16: 0.5, FP16: 0.25}")
        for prec in rates:
            if prec not in PRECISIONS:
                raise EdgeFusionError(f"{where}: throughput.{engine} names unknown precision '{prec}'",
                                      f"use {', '.join(PRECISIONS)}")
        out[engine] = {p: _check_number(v, "fraction", f"throughput.{engine}.{p}", where) for p, v in rates.items()}
    return out


def _op_precisions(data: dict, throughput: dict, where: str) -> dict:
    ops = _mapping(data["op_precisions"], "op_precisions", where)
    if "_elementwise" not in ops:
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
    return {k: list(v) for k, v in ops.items()}


def _vector_ops(data: dict, where: str) -> dict:
    table = _mapping(data["vector_ops_per_element"], "vector_ops_per_element", where)
    if "_elementwise" not in table:
        raise EdgeFusionError(f"{where}: vector_ops_per_element must include '_elementwise'", FORMAT)
    return {k: _check_number(v, "pos", f"vector_ops_per_element.{k}", where) for k, v in table.items()}


def _op_lists(data: dict, section: str, keys: dict[str, str], where: str) -> dict:
    """An optional section of op-type lists (``weights``, ``activations``): every key present, [] when absent."""
    sec = _mapping(data.get(section) or {}, section, where)
    unknown = sorted(set(sec) - set(keys))
    if unknown:
        raise EdgeFusionError(f"{where}: {section} has unknown key(s) {unknown}",
                              f"allowed in {section}: {sorted(keys)}")
    out = {}
    for key in keys:
        ops = sec.get(key, [])
        if not isinstance(ops, list) or not all(isinstance(o, str) and o for o in ops):
            raise EdgeFusionError(f"{where}: {section}.{key} must be a list of ONNX op types",
                                  "e.g. [MatMul] (or leave the section out)")
        out[key] = list(ops)
    return out


def validate_profile(data: object, where: str = "device profile") -> dict:
    """The profile's fields, checked and normalised (floats, lists); raises a one-line EdgeFusionError naming the
    first field that is missing, unknown or out of range."""
    if not isinstance(data, dict):
        raise EdgeFusionError(f"{where} is not a mapping", FORMAT)
    missing = [s for s in ("name", *FIELDS, *TABLES) if s not in data]
    if missing:
        raise EdgeFusionError(f"{where} lacks the section(s) {', '.join(missing)}",
                              "copy configs/devices/generic.yaml and fill in every section")
    unknown = sorted(str(k) for k in set(data) - TOP)
    if unknown:
        raise EdgeFusionError(f"{where} has unknown keys {unknown}", f"allowed: {sorted(TOP)}")
    for key in ("name", "description", "source"):
        if key in data and not isinstance(data[key], str) or (key == "name" and not str(data[key]).strip()):
            raise EdgeFusionError(f"{where}: {key} must be a (non-empty) string", f"set {key} to a name in quotes")
    extra = data.get("extra") or {}
    if not isinstance(extra, dict):
        raise EdgeFusionError(f"{where}: 'extra' must be a mapping", FORMAT)
    throughput = _throughput(data, where)
    return {"name": data["name"], "description": data.get("description", ""), "source": data.get("source", ""),
            "extra": dict(extra), **_sections(data, where), "weights": _op_lists(data, "weights", WEIGHTS, where),
            "activations": _op_lists(data, "activations", ACTIVATIONS, where), "throughput": throughput,
            "op_precisions": _op_precisions(data, throughput, where),
            "vector_ops_per_element": _vector_ops(data, where)}
