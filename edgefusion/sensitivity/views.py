"""Views derived from a report's per-source noise: per layer, per op type, per preset policy.

* ``single``: only this layer quantized at a precision, every other layer float (how much it alone costs);
* ``leave_one_out``: the base policy (``w8a8`` unless told otherwise) with only this layer at a precision (how much
  lifting it alone buys);
* op types: every layer of one type quantized at a precision, the rest float (``group``), or the base policy with
  that type lifted (``group_loo``), which is what confirms or refutes "softmax, swish and LayerNorm are the
  sensitive ones" on a given model.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from edgefusion.quant.policy import load_policy
from edgefusion.quant.precision import Precision
from edgefusion.sensitivity.noise_model import sqnr_from

PRESETS = ("default", "w8a8", "w8a16", "fp16")


def _entry(nm, noise: np.ndarray) -> dict:
    return {"sqnr_db": round(sqnr_from(nm.signal, noise), 3),
            "per_step_db": [round(x, 3) for x in nm.per_step_sqnr(noise)], "noise": float(noise.sum())}


def build_views(report, base: dict[str, Precision], cost_model, candidates) -> dict:
    """All derived views (plain dicts, rounded) for the JSON report, the CSV and the plots."""
    nm = report.noise_model()
    base_noise = nm.noise_of(base)
    base_db = sqnr_from(nm.signal, base_noise)
    layers = {}
    by_op: dict[str, list[str]] = defaultdict(list)
    for name, op in report.sites.op_types.items():
        by_op[op].append(name)
        stats = report.layers.get(name)
        entry = {"op_type": op, "base": base[name].value, "single": {}, "leave_one_out": {}, "cost": {}}
        for p in candidates:
            entry["single"][p.value] = _entry(nm, nm.single_layer_noise(name, p))
            loo = _entry(nm, nm.leave_one_out_noise(base, base_noise, name, p))
            loo["gain_db"] = round(loo["sqnr_db"] - base_db, 3)
            entry["leave_one_out"][p.value] = loo
            entry["cost"][p.value] = round(cost_model.layer_cost(stats, p), 6) if stats else 0.0
        layers[name] = entry
    op_types = {}
    for op, names in sorted(by_op.items()):
        group, group_loo, single = {}, {}, {}
        for p in candidates:
            group[p.value] = _entry(nm, nm.noise_of({n: p for n in names}))
            lifted = dict(base)
            lifted.update({n: p for n in names})
            g = _entry(nm, nm.noise_of(lifted))
            g["gain_db"] = round(g["sqnr_db"] - base_db, 3)
            group_loo[p.value] = g
            vals = [layers[n]["single"][p.value]["sqnr_db"] for n in names]
            single[p.value] = {"min_db": min(vals), "median_db": float(np.median(vals)), "max_db": max(vals)}
        op_types[op] = {"layers": len(names), "group": group, "group_loo": group_loo, "single": single}
    policies = {}
    for name in PRESETS:
        pred = report.predict(report.resolve(load_policy(name)), cost_model)
        policies[name] = {"sqnr_db": round(pred["sqnr_db"], 3), "per_step_db": [round(x, 3) for x in
                                                                                pred["per_step_db"]],
                          "cost": round(pred["cost"], 6)}
    ranking = sorted(op_types, key=lambda o: op_types[o]["group"][Precision.W8A8.value]["sqnr_db"])
    return {"base": {"sqnr_db": round(base_db, 3), "per_step_db": [round(x, 3) for x in nm.per_step_sqnr(base_noise)]},
            "cost_unit": cost_model.unit, "layers": layers, "op_types": op_types, "policies": policies,
            "op_types_by_w8a8_sensitivity": ranking}
