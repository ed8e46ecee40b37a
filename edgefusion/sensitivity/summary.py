"""The short human summary printed at the end of ``edgefusion profile``."""

from __future__ import annotations

from edgefusion.sensitivity.report import SensitivityReport
from edgefusion.sensitivity.table import format_table, op_type_table, top_layers


def format_profile_summary(report: SensitivityReport, out: str | None = None) -> str:
    """Provenance line, op-type table, most sensitive layers, prediction checks, automatic policy, files."""
    p, v, c = report.provenance, report.views, report.checks
    cal = p.calibration
    res = f"{cal.get('height')}x{cal.get('width')}" + (f" (model's own: {p.native_resolution[0]}x"
                                                       f"{p.native_resolution[1]})" if p.native_resolution else "")
    lines = [(f"edgefusion profile: {p.model}{' (random weights)' if p.random_weights else ''} | "
             f"base policy {p.policy.get('name')} | {res}"),
             (f"calibration: {cal.get('prompts')} prompts x {cal.get('steps')} steps -> {cal.get('samples')} UNet "
             f"samples (digest {cal.get('digest')}); profiled {len(report.done_samples)} with "
             f"{p.method.get('probes')} probes each"), "",
             ("Op types, most sensitive first (SQNR when all layers of the type are quantized, the rest float; "
             "gain when the type is lifted in the base policy):"),
             format_table(op_type_table(v)), "", "Most sensitive layers:", format_table(top_layers(v, 8)), ""]
    checks = c.get("policies", {})
    if checks:
        lines.append("Whole-policy SQNR, first-order prediction vs fake-quant simulation (profiled samples): " +
                     "; ".join(f"{k} {x['predicted_db']:.1f}/{x['simulated_db']:.1f} dB" for k, x in checks.items()
                               if k != "base"))
    auto = c.get("auto_policy", {})
    if "error" in auto:
        lines.append(f"auto policy: {auto['error']}")
    elif auto:
        sim = "" if auto.get("simulated_db") is None else f", simulated {auto['simulated_db']:.2f} dB"
        d = auto["presets"]["default"]
        if auto.get("whole_model_cost") is not None and d.get("whole_model_cost") is not None:
            cost = (f"latency {auto['whole_model_cost']:.1f} ms (per-layer table {auto['cost']:.1f})",
                    f"latency {d['whole_model_cost']:.1f} ms (table {d['cost']:.1f})")
        else:
            cost = f"cost {auto['cost']:.4g} {auto['cost_unit']}", f"cost {d['cost']:.4g}"
        lines.append(f"auto policy ({auto['target']['source']}): predicted {auto['predicted_db']:.2f} dB{sim}, "
                     f"{cost[0]} | default: {d['predicted_db']:.2f} dB, {cost[1]}")
    lat = report.latency
    if lat:
        whole = auto.get("whole_model_cost") if auto and "error" not in auto else None
        lines.append(f"UNet latency per image on {lat['device']} ({lat['steps']} steps x {2 if lat['guidance'] else 1}"
                     f" CFG branches, {lat['height']}x{lat['width']}): "
                     + ", ".join(f"all {k} {v:.1f} ms" for k, v in lat["uniform_ms"].items())
                     + ("" if whole is None else f"; auto {whole:.1f} ms"))
    t = report.timings_s
    lines.append(f"time: sweep {t.get('sweep', 0):.1f} s, refine {t.get('refine', 0):.1f} s, checks "
                 f"{t.get('checks', 0):.1f} s, total {t.get('total', 0):.1f} s")
    if out:
        lines.append(f"written: {out} (sensitivity.json/.csv, op_types.png, heatmap.png, ranking.png, "
                     "auto_policy.yaml, frontier.png)")
    return "\n".join(lines)
