"""The sensitivity sweep: per-source noise for every profiled sample, checkpointed, then checked by simulation.

Each chunk of samples costs one forward pass and ``probes`` backward passes for *all* layers and candidate
precisions at once (see ``linear_noise.py``); ``sensitivity.json`` is rewritten after every chunk, so an interrupted
run resumes where it stopped. At the end the first-order, additive prediction is checked against full fake-quant
simulation: the preset policies (whole-policy SQNR) and the most sensitive single layers.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from edgefusion.quant.plan import QuantPlan
from edgefusion.quant.precision import Precision
from edgefusion.sensitivity.linear_noise import linear_noise
from edgefusion.sensitivity.noise_model import sqnr_from
from edgefusion.sensitivity.report import CANDIDATES, Provenance, SensitivityReport
from edgefusion.sensitivity.simulate import Simulator
from edgefusion.sensitivity.views import PRESETS, build_views


def select_samples(samples, max_samples: int | None) -> list[int]:
    """Whole prompts (every step, both guidance branches) up to ``max_samples``; if one prompt is already more,
    samples of the first prompt spread evenly over its steps."""
    if not max_samples or max_samples >= len(samples):
        return list(range(len(samples)))
    by_prompt: OrderedDict[int, list[int]] = OrderedDict()
    for i, s in enumerate(samples):
        by_prompt.setdefault(s.prompt_index, []).append(i)
    chosen: list[int] = []
    for idx in by_prompt.values():
        if len(chosen) + len(idx) > max_samples:
            break
        chosen += idx
    if not chosen:
        first = next(iter(by_prompt.values()))
        pick = np.linspace(0, len(first) - 1, max_samples).round().astype(int)
        chosen = [first[i] for i in sorted(set(pick.tolist()))]
    return chosen


def new_report(sim: Simulator, provenance: Provenance, profiled: list[int], layer_stats) -> SensitivityReport:
    """An empty report for ``profiled`` samples (steps as columns)."""
    steps = sorted({int(sim.samples[i].step or 0) for i in profiled})
    per_step = [sum(1 for i in profiled if int(sim.samples[i].step or 0) == s) for s in steps]
    return SensitivityReport(provenance=provenance, steps=steps, layers=layer_stats, sites=sim.sites,
                             signal=[0.0] * len(steps), samples_per_step=per_step, profiled_samples=profiled)


def sweep(sim: Simulator, report: SensitivityReport, path: Path, probes: int, seed: int = 0,
          progress: bool = False, executor=None) -> SensitivityReport:
    """Profile the report's samples not done yet, saving the report after every chunk. ``executor`` ``ray``
    (an :class:`~edgefusion.executors.spec.ExecutorSpec`): the chunks run as Ray tasks (``ray_sweep.py``)."""
    if executor is not None and executor.is_ray:
        from edgefusion.sensitivity.ray_sweep import sweep_on_ray

        return sweep_on_ray(sim, report, path, probes, seed, progress, executor)
    from tqdm.auto import tqdm

    col = {s: i for i, s in enumerate(report.steps)}
    done = set(report.done_samples)
    todo = [i for i in report.profiled_samples if i not in done]
    report.save(path)
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc="sensitivity", disable=not progress, leave=False)
    signal = sim.signal()
    for chunk in sim.chunks_for(todo):
        est = linear_noise(sim, chunk, probes, seed=seed + chunk.index[0])
        cols = [col[int(sim.samples[i].step or 0)] for i in chunk.index]
        for key, vals in est.items():
            row = report.noise.setdefault(key, [0.0] * len(report.steps))
            for c, v in zip(cols, vals):
                row[c] += float(v)
        for c, i in zip(cols, chunk.index):
            report.signal[c] += float(signal[i])
        report.done_samples = sorted(done.union(chunk.index))
        done = set(report.done_samples)
        report.timings_s["sweep"] = round(report.timings_s.get("sweep", 0.0) + time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        report.save(path)
        bar.update(len(chunk.index))
    bar.close()
    return report


def source_plan(report: SensitivityReport, key: str) -> QuantPlan:
    """The plan that quantizes only the source ``key`` (``act|tensor|8`` ... ``w|init|int8``)."""
    kind, name, treatment = key.split("|")
    plan = QuantPlan()
    if kind == "act":
        if treatment == "fp16":
            plan.fp16_tensors.append(name)
        else:
            plan.act_bits[name] = int(treatment)
    elif treatment == "fp16":
        plan.fp16_weights.append(name)
    else:
        axes = {w: a for slots in report.sites.int8_slots.values() for w, a in slots}
        plan.int8_weights[name] = axes[name]
    return plan


def plan_keys(plan: QuantPlan) -> list[str]:
    """Source keys a plan turns on."""
    keys = [f"act|{t}|{b}" for t, b in plan.act_bits.items()] + [f"act|{t}|fp16" for t in plan.fp16_tensors]
    return keys + [f"w|{w}|int8" for w in plan.int8_weights] + [f"w|{w}|fp16" for w in plan.fp16_weights]


def refine(sim: Simulator, report: SensitivityReport, assignments: list[dict[str, Precision]], max_sources: int,
           time_budget_s: float, share: float = 0.6) -> dict:
    """Replace the first-order estimate of the sources that dominate the given assignments' noise by an exact
    single-source simulation (it also captures what first order misses: the sinusoid of the timestep, clipping
    outside the calibration range on held-out prompts). Sources refined before are skipped."""
    nm = report.noise_model()
    done = set(report.checks.get("refined", {}).get("sources", {}))
    wanted: list[str] = []
    for prec in assignments:
        keys = sorted((k for k in plan_keys(sim.plan(prec)) if k in nm.noise), key=lambda k: -nm.noise[k].sum())
        total = sum(nm.noise[k].sum() for k in keys) or 1.0
        acc = 0.0
        for k in keys:
            if acc >= share * total:
                break
            acc += nm.noise[k].sum()
            if k not in done:
                wanted.append(k)
    order = sorted(dict.fromkeys(wanted), key=lambda k: -nm.noise[k].sum())[:max_sources]  # most noise first
    col = {s: i for i, s in enumerate(report.steps)}
    cols = [col[int(sim.samples[i].step or 0)] for i in report.profiled_samples]
    record = report.checks.setdefault("refined", {"sources": {}, "seconds": 0.0, "candidates": 0})
    t0 = time.perf_counter()
    for key in order:
        if time.perf_counter() - t0 > time_budget_s:
            break
        per_sample = sim.plan_noise(source_plan(report, key), report.profiled_samples)
        exact = np.zeros(len(report.steps))
        np.add.at(exact, cols, per_sample)
        record["sources"][key] = {"estimate": float(sum(report.noise[key])), "exact": float(exact.sum())}
        report.noise[key] = [float(x) for x in exact]
    record["seconds"] = round(record["seconds"] + time.perf_counter() - t0, 3)
    record["candidates"] += len(order)
    return record


def exact_refiner(sim: Simulator, report: SensitivityReport, max_sources: int = 12,
                  time_budget_s: float = 30.0):
    """A ``refine`` callback for :func:`choose_auto_policy`: exact values for the sources its picks depend on."""
    def call(assignments: list[dict[str, Precision]]) -> int:
        before = len(report.checks.get("refined", {}).get("sources", {}))
        after = len(refine(sim, report, assignments, max_sources, time_budget_s)["sources"])
        return after - before
    return call


def run_checks(sim: Simulator, report: SensitivityReport, base: dict[str, Precision], check_layers: int,
               time_budget_s: float) -> dict:
    """Additive first-order prediction vs full fake-quant simulation on the profiled samples: the preset policies
    (``w8a8`` and ``default`` first) and the most sensitive single layers, until the time budget is spent."""
    from edgefusion.quant.policy import load_policy

    idx = report.profiled_samples
    signal = sim.signal(idx)
    nm = report.noise_model()
    todo = [(p, report.resolve(load_policy(p))) for p in ("w8a8", "default", "w8a16", "fp16")]
    if all(base != prec for _, prec in todo):
        todo.insert(0, ("base", base))
    ranked = sorted(report.sites.op_types, key=lambda n: nm.single_layer_noise(n, Precision.W8A8).sum(),
                    reverse=True)[:check_layers]
    todo += [(f"layer:{n}", {n: Precision.W8A8}) for n in ranked]
    policies, layers, skipped, t0 = {}, {}, [], time.perf_counter()
    for name, prec in todo:
        if time.perf_counter() - t0 > time_budget_s and len(policies) >= 2:
            skipped.append(name)
            continue
        predicted = sqnr_from(nm.signal, nm.noise_of(prec))
        simulated = sqnr_from(signal, sim.plan_noise(sim.plan(prec), idx))
        entry = {"predicted_db": round(predicted, 3), "simulated_db": round(simulated, 3),
                 "delta_db": round(predicted - simulated, 3)}
        if name.startswith("layer:"):
            layers[name[6:]] = {"precision": "W8A8", **entry}
        else:
            policies[name] = entry
    worst = max([abs(v["delta_db"]) for v in policies.values()] or [0.0])
    return {"samples": len(idx), "policies": policies, "layers": layers, "max_policy_delta_db": round(worst, 3),
            "skipped_for_time": skipped}


def finish(sim: Simulator, report: SensitivityReport, path: Path, base: dict[str, Precision], cost_model,
           check_layers: int = 4, refine_sources: int = 24) -> SensitivityReport:
    """Checks and derived views; marks the report complete and saves it."""
    t0 = time.perf_counter()
    sweep_s = report.timings_s.get("sweep", 0.0)
    from edgefusion.quant.policy import load_policy

    presets = [report.resolve(load_policy(p)) for p in PRESETS]
    refine(sim, report, presets, refine_sources, max(5.0, 0.3 * sweep_s))
    report.timings_s["refine"] = report.checks["refined"]["seconds"]
    t0 = time.perf_counter()
    report.checks.update(run_checks(sim, report, base, check_layers, max(10.0, 0.4 * sweep_s)))
    n = min(report.samples_per_step or [1])
    probes = report.provenance.method.get("probes", 1)
    report.checks["per_step_spread_db"] = round(10 * np.log10(1 + np.sqrt(2 / (probes * max(n, 1)))), 2)
    report.checks["pooled_spread_db"] = round(10 * np.log10(1 + np.sqrt(2 / (probes * len(report.done_samples)))),
                                              2)
    report.timings_s["checks"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    report.views = build_views(report, base, cost_model, CANDIDATES)
    report.timings_s["views"] = round(time.perf_counter() - t0, 3)
    report.complete = True
    report.save(path)
    return report
