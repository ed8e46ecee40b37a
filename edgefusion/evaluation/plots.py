"""Per-step error plots (matplotlib, PNG files next to the report): where along the denoising loop error grows."""

from __future__ import annotations

from pathlib import Path

PLOTS_DIR = "plots"
PLOTS = {"noise_sqnr_db_per_step": ("UNet noise prediction SQNR vs PyTorch float", "SQNR (dB)"),
         "latent_psnr_db_per_step": ("Latent PSNR vs PyTorch float (peak = reference latent range)", "PSNR (dB)")}


def write_step_plots(summary: dict[str, dict], timesteps: list[float], folder: str | Path) -> dict[str, str]:
    """One PNG per per-step metric, a line per variant (mean over images); returns ``{metric: relative path}``
    for the metrics that have data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out = {}
    for metric, (title, ylabel) in PLOTS.items():
        lines = {s["label"]: s[metric] for s in summary.values() if s.get(metric)}
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(8.5, 3.6), dpi=100)
        for label, values in lines.items():
            xs = [i + 1 for i, v in enumerate(values) if v is not None]
            ax.plot(xs, [v for v in values if v is not None], marker="o", markersize=3, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("denoising step" + (f" (timestep {timesteps[0]:.0f} -> {timesteps[-1]:.0f})"
                                          if timesteps else ""))
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        rel = f"{PLOTS_DIR}/{metric}.png"
        (Path(folder) / PLOTS_DIR).mkdir(exist_ok=True)
        fig.savefig(Path(folder) / rel, format="png")
        plt.close(fig)
        out[metric] = rel
    return out
