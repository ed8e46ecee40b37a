"""A plain-text (Markdown) table of an evaluation's summary, for terminals and the README."""

from __future__ import annotations

from edgefusion.evaluation.latency_view import format_latency
from edgefusion.evaluation.results import EvalResult


def _f(x, fmt: str) -> str:
    return "—" if x is None else fmt.format(x)


def markdown_table(result: EvalResult) -> str:
    """One row per variant: PSNR/SSIM vs float, noise SQNR (mean over steps), attribute accuracy (all five, colour,
    shape), CLIP score and FID when measured, latency estimate."""
    summ = result.summary
    has_attr = any(s.get("attribute_accuracy") for s in summ.values())
    has_clip = any(s.get("clip_score") is not None for s in summ.values())
    has_fid = any(s.get("fid") is not None for s in summ.values())
    has_fid_float = any(s.get("fid_vs_float") is not None for s in summ.values())
    head = ["variant", "PSNR vs float (dB)", "SSIM vs float", "noise SQNR mean over steps (dB)"]
    head += ["attributes all / colour / shape"] if has_attr else []
    head += ["CLIP score"] if has_clip else []
    head += ["FID vs ref stats"] if has_fid else []
    head += ["FID vs float"] if has_fid_float else []
    head.append("latency estimate")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in result.spec.variants:
        s = summ.get(v.key, {})
        row = [f"`{v.label}`" if v.kind == "export" else v.label, _f(s.get("psnr_db"), "{:.2f}"),
               _f(s.get("ssim"), "{:.4f}"), _f(s.get("noise_sqnr_db_mean"), "{:.1f}")]
        if has_attr:
            acc = s.get("attribute_accuracy")
            row.append("—" if not acc else " / ".join(f"{100 * acc[k]:.0f}%" for k in ("all", "colour", "shape")))
        if has_clip:
            row.append(_f(s.get("clip_score"), "{:.2f}"))
        if has_fid:
            row.append(_f(s.get("fid"), "{:.4g}"))
        if has_fid_float:
            row.append(_f(s.get("fid_vs_float"), "{:.4g}"))
        row.append(format_latency(s.get("latency")) if v.kind == "export" else "—")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
