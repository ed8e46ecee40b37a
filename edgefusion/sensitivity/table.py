"""Flat tables of a report: ``sensitivity.csv`` (one row per layer x view x precision x step, for pandas) and small
text tables for terminals and notebooks."""

from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = ["layer", "op_type", "view", "precision", "step", "sqnr_db", "gain_db", "cost"]


def rows(views: dict, steps: list[int]):
    """Rows of the flat table; ``step`` is ``all`` for the pooled figure, else the denoising step."""
    for name, v in views["layers"].items():
        for view in ("single", "leave_one_out"):
            for p, e in v[view].items():
                base = {"layer": name, "op_type": v["op_type"], "view": view, "precision": p,
                        "gain_db": e.get("gain_db", ""), "cost": v["cost"].get(p, "")}
                yield {**base, "step": "all", "sqnr_db": e["sqnr_db"]}
                for s, x in zip(steps, e["per_step_db"]):
                    yield {**base, "step": s, "sqnr_db": x, "gain_db": ""}


def write_csv(views: dict, steps: list[int], path: str | Path) -> Path:
    """Write ``sensitivity.csv``."""
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows(views, steps))
    return path


def op_type_table(views: dict) -> list[dict]:
    """One row per op type, most W8A8-sensitive first: group SQNR per precision and the gain of lifting the type."""
    out = []
    for op in views["op_types_by_w8a8_sensitivity"]:
        d = views["op_types"][op]
        out.append({"op_type": op, "layers": d["layers"],
                    **{f"all {p} (dB)": d["group"][p]["sqnr_db"] for p in d["group"]},
                    **{f"lift to {p} (dB)": d["group_loo"][p]["gain_db"] for p in d["group_loo"] if p != "W8A8"},
                    "worst layer W8A8 (dB)": d["single"]["W8A8"]["min_db"]})
    return out


def top_layers(views: dict, n: int = 15, precision: str = "W8A8") -> list[dict]:
    """The ``n`` layers with the lowest single-layer SQNR at ``precision``."""
    items = sorted(views["layers"].items(), key=lambda kv: kv[1]["single"][precision]["sqnr_db"])[:n]
    return [{"layer": k, "op_type": v["op_type"], f"alone {precision} (dB)": v["single"][precision]["sqnr_db"],
             "lift to W8A16 (dB)": v["leave_one_out"]["W8A16"]["gain_db"],
             "lift to FP16 (dB)": v["leave_one_out"]["FP16"]["gain_db"]} for k, v in items]


def format_table(table: list[dict], markdown: bool = False) -> str:
    """Plain (or markdown) text table of a list of dict rows."""
    if not table:
        return ""
    cols = list(table[0])

    def cell(x) -> str:
        return f"{x:.2f}" if isinstance(x, float) else str(x)

    cells = [[cell(r.get(c, "")) for c in cols] for r in table]
    if markdown:
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])
    width = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, width)), "  ".join("-" * w for w in width)]
    return "\n".join(lines + ["  ".join(x.ljust(w) for x, w in zip(r, width)) for r in cells])
