"""Files written next to ``sensitivity.json``: the flat CSV, the plots, and the automatic policy with its frontier."""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgefusion.sensitivity.autopolicy import AutoPolicy
from edgefusion.sensitivity.noise_model import sqnr_from
from edgefusion.sensitivity.plots import (
    plot_frontier,
    plot_heatmap,
    plot_op_types,
    plot_ranking,
)
from edgefusion.sensitivity.report import SensitivityReport
from edgefusion.sensitivity.table import write_csv

REPORT_FILES = ("sensitivity.csv", "op_types.png", "heatmap.png", "ranking.png")
AUTO_FILES = ("auto_policy.yaml", "auto_policy.json", "frontier.png")


def _atomic(path: Path, write) -> Path:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    write(tmp)
    os.replace(tmp, path)
    return path


def write_report_files(report: SensitivityReport, folder: str | Path) -> list[Path]:
    """CSV and the three sensitivity plots (each written atomically)."""
    folder = Path(folder)
    v = report.views
    return [_atomic(folder / "sensitivity.csv", lambda p: write_csv(v, report.steps, p)),
            _atomic(folder / "op_types.png", lambda p: plot_op_types(v, p)),
            _atomic(folder / "heatmap.png", lambda p: plot_heatmap(v, report.steps, p)),
            _atomic(folder / "ranking.png", lambda p: plot_ranking(v, p))]


def auto_yaml(auto: AutoPolicy) -> str:
    """The policy YAML with a header saying how it was chosen (edit it and pass it back with --mpq-policy)."""
    s = auto.summary()
    sim = f", simulated {s['simulated_db']} dB" if s["simulated_db"] is not None else ""
    unit = " dB" if s["target"]["kind"] == "sqnr_db" else " " + s["cost_unit"]
    head = [(f"# Chosen by `--mpq-policy auto` from a sensitivity report ({s['target']['source']}: "
            f"{s['target']['value']:g}{unit})."),
            (f"# UNet SQNR predicted {s['predicted_db']} dB{sim}; cost {s['cost']:.4g} {s['cost_unit']} "
             + ("(UNet per image, per-layer table of the device latency model"
                + (f"; the whole model: {s['whole_model_cost']:.1f} ms" if s.get("whole_model_cost") is not None
                   else "") + ")." if s["cost_unit"] == "ms" else "(MAC/byte proxy, not a latency).")),
            "# Presets on the same samples: " + "; ".join(
                f"{k} {v['predicted_db']} dB / {v.get('whole_model_cost', v['cost']):.6g}" for k, v in s["presets"].items()),
            "# Edit freely and pass back with --mpq-policy PATH (rules: first match wins)."]
    return "\n".join(head) + "\n" + auto.spec.to_yaml()


def write_auto_files(auto: AutoPolicy, report: SensitivityReport, folder: str | Path) -> list[Path]:
    """``auto_policy.yaml`` (editable), ``auto_policy.json`` (summary) and ``frontier.png``."""
    folder = Path(folder)
    nm = report.noise_model()
    signal = float(nm.signal.sum())
    fr = auto.frontier
    pts = [{"cost": p.cost + auto.offset, "sqnr_db": sqnr_from(signal, p.noise)} for p in fr.pareto] if fr else []
    summary = {**auto.summary(), "frontier": [{"cost": round(p["cost"], 6), "sqnr_db": round(p["sqnr_db"], 3)}
                                              for p in pts]}
    # the presets and the pick at their whole-model latency when known (the line is the per-layer table's front)
    chosen = {"cost": auto.whole_model_cost if auto.whole_model_cost is not None else auto.cost,
              "predicted_db": auto.predicted_db}
    presets = {k: {**v, "cost": v.get("whole_model_cost", v["cost"])} for k, v in auto.presets.items()}
    return [_atomic(folder / "auto_policy.yaml", lambda p: p.write_text(auto_yaml(auto))),
            _atomic(folder / "auto_policy.json", lambda p: p.write_text(json.dumps(summary, indent=1) + "\n")),
            _atomic(folder / "frontier.png", lambda p: plot_frontier(pts, presets, chosen, auto.cost_unit, p))]
