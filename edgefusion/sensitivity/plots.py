"""PNG plots of a sensitivity report (matplotlib, headless): op types, layer x step heatmap, ranking, frontier."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefusion.metrics import CAP_DB


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _short(name: str, width: int = 60) -> str:
    name = name.removeprefix("unet/")
    return name if len(name) <= width else "..." + name[-(width - 3):]


def plot_op_types(views: dict, path: Path) -> Path:
    """Per op type: single-layer SQNR of every layer (dots) and the whole type quantized at once (bar)."""
    plt = _plt()
    ops = list(views["op_types_by_w8a8_sensitivity"])
    precs = ["W8A8", "W8A16", "FP16"]
    fig, ax = plt.subplots(figsize=(max(8, 0.7 * len(ops)), 5))
    width = 0.27
    for k, p in enumerate(precs):
        xs = np.arange(len(ops)) + (k - 1) * width
        group = [min(views["op_types"][o]["group"][p]["sqnr_db"], CAP_DB) for o in ops]
        ax.bar(xs, group, width, alpha=0.35, label=f"{p}: all layers of the type")
        for x, o in zip(xs, ops):
            vals = [v["single"][p]["sqnr_db"] for v in views["layers"].values() if v["op_type"] == o]
            ax.scatter(np.full(len(vals), x), np.minimum(vals, CAP_DB), s=6, color=f"C{k}")
    ax.set_xticks(np.arange(len(ops)), ops, rotation=45, ha="right")
    ax.set_ylabel("UNet output SQNR (dB), only these layers quantized")
    ax.set_title("Sensitivity per op type (lower = more sensitive); dots = one layer alone")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_heatmap(views: dict, steps: list[int], path: Path, top: int = 40, precision: str = "W8A8") -> Path:
    """SQNR per denoising step of the ``top`` most sensitive layers, each quantized alone at ``precision``."""
    plt = _plt()
    layers = sorted(views["layers"].items(), key=lambda kv: kv[1]["single"][precision]["sqnr_db"])[:top]
    data = np.array([[min(x, CAP_DB) for x in v["single"][precision]["per_step_db"]] for _, v in layers])
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(steps) + 4), max(4, 0.22 * len(layers) + 1.5)))
    im = ax.imshow(data, aspect="auto", cmap="viridis")
    ax.set_yticks(np.arange(len(layers)), [f"{_short(n, 50)} ({v['op_type']})" for n, v in layers], fontsize=6)
    ax.set_xticks(np.arange(len(steps)), [str(s) for s in steps], fontsize=7)
    ax.set_xlabel("denoising step (0 = first, high noise)")
    ax.set_title(f"Per-step SQNR (dB), one layer at {precision}, the {len(layers)} most sensitive")
    fig.colorbar(im, ax=ax, label="dB")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_ranking(views: dict, path: Path, top: int = 30) -> Path:
    """The ``top`` layers by single-layer W8A8 SQNR, and what lifting each one (leave-one-out) buys."""
    plt = _plt()
    items = sorted(views["layers"].items(), key=lambda kv: kv[1]["single"]["W8A8"]["sqnr_db"])[:top]
    ops = sorted({v["op_type"] for _, v in items})
    colour = {o: f"C{i % 10}" for i, o in enumerate(ops)}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, max(4, 0.25 * len(items) + 1.5)), sharey=True)
    y = np.arange(len(items))
    a1.barh(y, [min(v["single"]["W8A8"]["sqnr_db"], CAP_DB) for _, v in items],
            color=[colour[v["op_type"]] for _, v in items])
    a1.set_yticks(y, [_short(n, 55) for n, _ in items], fontsize=6)
    a1.invert_yaxis()
    a1.set_xlabel("SQNR (dB), this layer alone at W8A8")
    for o in ops:
        a1.barh([0], [0], color=colour[o], label=o)
    a1.legend(fontsize=7)
    for k, p in enumerate(("W8A16", "FP16")):
        a2.barh(y + (k - 0.5) * 0.4, [v["leave_one_out"][p]["gain_db"] for _, v in items], 0.4, label=p)
    a2.set_xlabel("gain (dB) over the base policy when only this layer is lifted")
    a2.legend(fontsize=7)
    fig.suptitle("Most sensitive layers")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_frontier(frontier_points: list[dict], presets: dict[str, dict], chosen: dict | None, unit: str,
                  path: Path) -> Path:
    """Predicted SQNR vs cost along the frontier, the preset policies and the automatic pick."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    pts = sorted(frontier_points, key=lambda p: p["cost"])
    ax.plot([p["cost"] for p in pts], [p["sqnr_db"] for p in pts], "-", color="0.5", lw=1,
            label="frontier (per-layer table)" if unit == "ms" else "frontier")
    for k, (name, info) in enumerate(presets.items()):
        ax.scatter([info["cost"]], [info["predicted_db"]], marker="s", s=50, color=f"C{k}", label=name, zorder=3)
        if info.get("simulated_db") is not None:
            ax.scatter([info["cost"]], [info["simulated_db"]], marker="x", s=40, color=f"C{k}", zorder=3)
    if chosen:
        ax.scatter([chosen["cost"]], [chosen["predicted_db"]], marker="*", s=180, color="red", zorder=4,
                   label=f"auto ({chosen['predicted_db']:.1f} dB)")
    ax.set_xlabel("UNet NPU latency per image (ms, device latency model; markers: whole model)" if unit == "ms"
                  else f"UNet cost ({unit}; MAC/byte proxy, not a latency)")
    ax.set_ylabel("predicted UNet SQNR (dB)")
    ax.set_title("Quality vs cost (squares: predicted, x: simulated)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
