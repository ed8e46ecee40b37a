"""Read an export's latency estimate (manifest ``latency``) defensively, for tables: ``None`` when not estimated."""

from __future__ import annotations

import math

COMPONENTS = ("text_encoder", "unet", "vae_decoder")


def _number(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x >= 0 else None


def read_latency(manifest: dict) -> dict | None:
    """``{"total_ms", "device", "backend", "steps", "tiled", "components": {name: {"ms", "calls"}}}`` from a manifest
    dict, keeping only well-formed numbers (a missing component or field is left out); ``None`` when the manifest
    has no usable total (the estimate was not made, or its format is not understood)."""
    lat = manifest.get("latency") if isinstance(manifest, dict) else None
    if not isinstance(lat, dict):
        return None
    total = _number(lat.get("total_ms"))
    if total is None:
        return None
    comps = {}
    raw = lat.get("components") if isinstance(lat.get("components"), dict) else {}
    for name in COMPONENTS:
        entry = raw.get(name)
        if isinstance(entry, dict) and _number(entry.get("ms")) is not None:
            calls = _number(entry.get("calls"))
            comps[name] = {"ms": _number(entry["ms"]), "calls": int(calls) if calls is not None else None}
    steps = _number(lat.get("steps"))
    return {"total_ms": total, "device": str(lat.get("device", "")), "backend": str(lat.get("backend", "")),
            "steps": int(steps) if steps is not None else None, "tiled": bool(lat.get("tiled", False)),
            "components": comps}


def format_latency(lat: dict | None) -> str:
    """``"812.4 ms"`` or ``"not estimated"``."""
    return "not estimated" if lat is None else f"{lat['total_ms']:.1f} ms"
