"""``--mpq-policy auto``: pick a per-layer precision from a sensitivity report for a quality target or a cost budget.

Without a target the budget is the cost of the ``default`` policy, so ``auto`` is the best quality at no higher cost
than ``default``. Costs: the device latency model (UNet ms per image) when the report carries its per-layer table,
else the MAC/byte proxy. The frontier is searched on the additive per-layer table; when the whole latency model is
at hand (``whole_cost``) every candidate and preset is re-priced by it and the budget is checked on that price.
When a simulator is at hand the best few candidates are simulated (full fake-quant forward on the profiled
samples): within a budget the best simulated wins; for a target, the cheapest that simulates above it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgefusion.errors import EdgeFusionError
from edgefusion.quant.policy import PolicySpec, load_policy
from edgefusion.quant.precision import Precision
from edgefusion.sensitivity.noise_model import sqnr_from
from edgefusion.sensitivity.report import CANDIDATES, SensitivityReport
from edgefusion.sensitivity.search import Frontier, build_frontier
from edgefusion.sensitivity.views import PRESETS

MAX_TRIES = 4
REFINE_ROUNDS = 2


@dataclass
class AutoPolicy:
    """The chosen policy and how it compares with the presets."""

    spec: PolicySpec
    precisions: dict[str, Precision]
    target: dict  # {"kind": "sqnr_db" | "cost", "value": float, "source": ...}
    predicted_db: float
    cost: float
    cost_unit: str
    simulated_db: float | None = None
    presets: dict[str, dict] = field(default_factory=dict)  # name -> cost, predicted_db, simulated_db
    tried: list[dict] = field(default_factory=list)
    frontier: Frontier | None = None
    offset: float = 0.0  # cost no layer's precision changes (added to every frontier point)
    whole_model_cost: float | None = None  # the chosen assignment re-costed by the whole latency model

    def summary(self) -> dict:
        """JSON-able summary (no frontier)."""
        return {"policy": self.spec.name, "target": self.target, "predicted_db": round(self.predicted_db, 3),
                "simulated_db": None if self.simulated_db is None else round(self.simulated_db, 3),
                "cost": round(self.cost, 6), "cost_unit": self.cost_unit,
                "whole_model_cost": None if self.whole_model_cost is None else round(self.whole_model_cost, 3),
                "precision_counts": {p.value: sum(1 for v in self.precisions.values() if v is p) for p in Precision},
                "presets": self.presets, "tried": self.tried,
                "assignment": {n: p.value for n, p in sorted(self.precisions.items())}}


def layer_costs(report: SensitivityReport, cost_model) -> dict[str, dict[Precision, float]]:
    """Cost of every layer at every precision."""
    return {n: {p: (cost_model.layer_cost(report.layers[n], p) if n in report.layers else 0.0) for p in Precision}
            for n in report.sites.op_types}


def policy_from_precisions(report: SensitivityReport, precisions: dict[str, Precision], name: str,
                           description: str, template: str = "default") -> PolicySpec:
    """An editable policy: the template's rules for other components and locked layers, exact-name rules for the
    layers that differ from their op type's majority, one rule per op type, then ``_default``."""
    layers = report.layer_objects()
    base = load_policy(template).bound(layers)
    keep = []  # template rules that match no UNet layer (other components) or pin a layer to FP32
    for key, prec in base.rules:
        if key == "_default":
            continue
        hits = [la for la in layers if _matches(key, la)]
        if not hits or (prec is Precision.FP32 and all(precisions.get(la.name) is Precision.FP32 for la in hits)):
            keep.append((key, prec))
    by_op: dict[str, dict[Precision, int]] = {}
    for la in layers:
        by_op.setdefault(la.op_type, {}).setdefault(precisions[la.name], 0)
        by_op[la.op_type][precisions[la.name]] += 1
    op_rule = {op: max(c, key=lambda p: (c[p], p.value)) for op, c in by_op.items()}
    overall = max(CANDIDATES, key=lambda p: sum(1 for v in precisions.values() if v is p))
    exact = [(la.name, precisions[la.name]) for la in layers
             if not any(_matches(k, la) for k, _ in keep) and precisions[la.name] is not op_rule[la.op_type]]
    ops = [(f"op:{op}", p) for op, p in sorted(op_rule.items()) if p is not overall]
    spec = PolicySpec(name, keep + exact + ops + [("_default", overall)], description)
    got = {la.name: spec.precision_for(la) for la in layers}
    if got != precisions:  # a template rule shadowed something: fall back to one exact rule per layer
        spec = PolicySpec(name, [(k, p) for k, p in keep if not any(_matches(k, la) for la in layers)]
                          + [(la.name, precisions[la.name]) for la in layers] + [("_default", overall)], description)
    return spec


def _matches(key: str, layer) -> bool:
    import re

    if key.startswith("re:"):
        return re.search(key[3:], layer.name) is not None
    if key.startswith("op:"):
        return key[3:] == layer.op_type
    return key == layer.name


def _candidates(report: SensitivityReport, cost_model, target_sqnr, latency_budget_ms):
    """Frontier and the candidate points for the target, best first; raises when the target is out of reach."""
    nm = report.noise_model()
    costs = layer_costs(report, cost_model)
    presets = {p: report.resolve(load_policy(p)) for p in PRESETS}
    locked = {n: p for n, p in presets["default"].items() if p is Precision.FP32}
    fr = build_frontier(nm, costs, locked, list(CANDIDATES), presets)
    off = float(getattr(cost_model, "offset_ms", 0.0))  # cost no layer's precision changes
    signal = float(nm.signal.sum())

    def db(noise: float) -> float:
        return sqnr_from(signal, noise)

    info = {name: {"cost": round(pt.cost + off, 6), "predicted_db": round(db(pt.noise), 3), "simulated_db": None}
            for name in presets for pt in fr.points if pt.walk == name}
    if target_sqnr is not None:
        target = {"kind": "sqnr_db", "value": float(target_sqnr), "source": "--target-sqnr"}
        order = [p for p in fr.pareto if db(p.noise) >= target_sqnr]  # by increasing cost
        if not order:
            best = fr.pareto[-1]
            raise EdgeFusionError(
                f"no policy reaches {target_sqnr:g} dB on this UNet: the best reachable is {db(best.noise):.1f} dB "
                f"(predicted, cost {best.cost + off:.4g} {cost_model.unit})",
                f"lower --target-sqnr to {np.floor(db(best.noise) * 10) / 10:g} or less")
    else:
        budget = float(latency_budget_ms) if latency_budget_ms is not None else info["default"]["cost"]
        source = ("--latency-budget-ms" + ("" if cost_model.unit == "ms" else " (on the cost proxy)")
                  if latency_budget_ms is not None else "cost of the default policy")
        target = {"kind": "cost", "value": budget, "unit": cost_model.unit, "source": source}
        order = sorted((p for p in fr.pareto if p.cost + off <= budget * (1 + 1e-9)), key=lambda p: p.noise)
        if not order:
            cheapest = fr.pareto[0]
            raise EdgeFusionError(
                f"no policy fits a budget of {budget:g} {cost_model.unit}: the cheapest costs "
                f"{cheapest.cost + off:.4g} ({db(cheapest.noise):.1f} dB predicted)",
                f"raise --latency-budget-ms to {np.ceil((cheapest.cost + off) * 1e4) / 1e4:g} or more")
    return fr, order, target, info, presets, costs, db


def _whole_fits(front, assignment, whole_of, budget: float, keep: int = MAX_TRIES) -> list:
    """The ``keep`` costliest points of ``front`` (by increasing cost) whose whole-model cost fits ``budget``:
    a binary search for the last fitting point (the whole model's cost grows along the front, nearly), then the
    points just below it that fit."""
    lo, hi = 0, len(front) - 1
    if hi < 0 or whole_of(assignment(front[0])) > budget * (1 + 1e-9):
        return []
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if whole_of(assignment(front[mid])) <= budget * (1 + 1e-9):
            lo = mid
        else:
            hi = mid - 1
    out = []
    for i in range(lo, -1, -1):
        if whole_of(assignment(front[i])) <= budget * (1 + 1e-9):
            out.append(front[i])
        if len(out) >= keep or lo - i >= 2 * keep:
            break
    return out


def choose_auto_policy(report: SensitivityReport, target_sqnr: float | None = None,
                       latency_budget_ms: float | None = None, cost_model=None,
                       simulate: Callable[[dict[str, Precision]], float] | None = None,
                       simulated_presets: dict[str, float] | None = None,
                       refine: Callable[[list[dict[str, Precision]]], int] | None = None,
                       whole_cost: Callable[[dict[str, Precision]], float] | None = None,
                       previous: dict | None = None) -> AutoPolicy:
    """Pick the policy (see the module docstring); raises a one-line error when the target is out of reach.

    ``refine(assignments)`` (optional) replaces the estimates of the sources dominating those assignments by
    exact measurements in the report and returns how many it replaced; the frontier is then rebuilt. The best
    candidates of every round stay in the running: with ``simulate`` they are all simulated (a budget: the best
    simulated wins; a target: the cheapest that simulates above it, else further up the frontier).
    """
    if target_sqnr is not None and latency_budget_ms is not None:
        raise EdgeFusionError("both --target-sqnr and --latency-budget-ms were given", "pass only one of them")
    cost_model = cost_model or report.cost_model()
    fr, order, target, info, presets, costs, db = _candidates(report, cost_model, target_sqnr, latency_budget_ms)
    pool = [fr.assignment(p) for p in order[:2]]
    for _ in range(REFINE_ROUNDS if refine is not None else 0):
        if not refine(pool[-2:]):
            break
        fr, order, target, info, presets, costs, db = _candidates(report, cost_model, target_sqnr,
                                                                  latency_budget_ms)
        pool += [fr.assignment(p) for p in order[:2]]
    nm = report.noise_model()

    def cost_of(prec: dict[str, Precision]) -> float:
        return float(sum(costs[n][p] for n, p in prec.items())) + float(getattr(cost_model, "offset_ms", 0.0))

    whole: dict[tuple, float] = {}

    def whole_of(prec: dict[str, Precision]) -> float:
        key = tuple(sorted((n, p.value) for n, p in prec.items()))
        if key not in whole:
            whole[key] = float(whole_cost(prec))
        return whole[key]

    if whole_cost is not None:  # the presets by the whole model; the default budget is the default's whole cost
        for name in info:
            info[name]["whole_model_cost"] = round(whole_of(presets[name]), 3)
        if target["kind"] == "cost" and latency_budget_ms is None:
            target["value"] = whole_of(presets["default"])
    prev = (previous or {}).get("assignment")
    if prev and previous.get("target") == target and set(prev) == set(report.sites.op_types):
        prec = {n: Precision(v) for n, v in prev.items()}
        pred, cost, best_sim = db(float(nm.noise_of(prec).sum())), cost_of(prec), previous.get("simulated_db")
        info = {k: {**v, "simulated_db": (previous.get("presets", {}).get(k) or {}).get("simulated_db")}
                for k, v in info.items()}
        return _finish(report, prec, target, pred, cost, cost_model, best_sim, info, previous.get("tried", []), fr,
                       None if whole_cost is None else whole_of(prec))
    extra = []
    if whole_cost is not None and target["kind"] == "cost":  # the front's points the whole model fits
        extra = [fr.assignment(p) for p in _whole_fits(fr.pareto, fr.assignment, whole_of, target["value"])]
    unique: dict[tuple, dict[str, Precision]] = {}
    for prec in pool + [fr.assignment(p) for p in order[:MAX_TRIES]] + extra + list(presets.values()):
        prec = report.sites.settle(prec)  # what the exporter runs (promotions, quant/plan.py): priced and written
        unique.setdefault(tuple(sorted((n, p.value) for n, p in prec.items())), prec)
    cands = [(prec, db(float(nm.noise_of(prec).sum())), cost_of(prec)) for prec in unique.values()]
    if whole_cost is not None:  # a few dozen candidates at most: the whole model prices each (~1 s on sd-v1.5)
        cands = [(prec, pred, whole_of(prec)) for prec, pred, _ in cands]
    if target["kind"] == "cost":
        fitting = sorted((c for c in cands if c[2] <= target["value"] * (1 + 1e-9)), key=lambda c: -c[1])
        if not fitting:
            cheapest = min(c[2] for c in cands)
            raise EdgeFusionError(f"no policy fits a budget of {target['value']:g} {cost_model.unit} by the whole "
                                  f"latency model: the cheapest candidate costs {cheapest:.4g}",
                                  f"raise --latency-budget-ms to {np.ceil(cheapest * 1e4) / 1e4:g} or more")
        cands = fitting
    else:
        cands = sorted((c for c in cands if c[1] >= target_sqnr), key=lambda c: c[2]) or \
            sorted(cands, key=lambda c: -c[1])
    sim_cache: dict[str, float] = dict(simulated_presets or {})  # presets already simulated (profiler checks)
    if simulate is not None and target["kind"] == "cost" and "default" not in sim_cache:
        sim_cache["default"] = float(simulate(presets["default"]))
    for name in info:
        if name in sim_cache:
            info[name]["simulated_db"] = round(sim_cache[name], 3)
    tried, chosen, best_sim = [], cands[0], None
    for cand in cands[:MAX_TRIES if simulate is not None else 1]:
        sim = None if simulate is None else float(simulate(cand[0]))
        tried.append({"cost": round(cand[2], 6), "predicted_db": round(cand[1], 3),
                      "simulated_db": None if sim is None else round(sim, 3)})
        if sim is None:
            break
        if target["kind"] == "sqnr_db":
            if best_sim is None or sim > best_sim:
                chosen, best_sim = cand, sim
            if sim >= target_sqnr:
                chosen, best_sim = cand, sim
                break
        elif best_sim is None or sim > best_sim:
            chosen, best_sim = cand, sim
    prec, pred, _ = chosen
    return _finish(report, prec, target, pred, cost_of(prec), cost_model, best_sim, info, tried, fr,
                   None if whole_cost is None else whole_of(prec))


def _finish(report, prec, target, pred, cost, cost_model, best_sim, info, tried, fr, whole) -> AutoPolicy:
    """The :class:`AutoPolicy` of the chosen assignment, with its editable policy."""
    unit = " dB" if target["kind"] == "sqnr_db" else " " + cost_model.unit
    desc = (f"auto: {target['source']} {target['value']:g}{unit}"
            f"; predicted UNet SQNR {pred:.2f} dB"
            + ("" if best_sim is None else f", simulated {best_sim:.2f} dB")
            + (f"; cost {cost:.4g} {cost_model.unit} (default: {info['default']['cost']:.4g})" if whole is None else
               f"; UNet latency {whole:.1f} ms per image (default: {info['default']['whole_model_cost']:.1f})"))
    spec = policy_from_precisions(report, prec, "auto", desc)
    return AutoPolicy(spec, prec, target, pred, cost, cost_model.unit, best_sim, info, tried, fr,
                      float(getattr(cost_model, "offset_ms", 0.0)), whole)
