"""The short human summary printed at the end of ``edgefusion export``."""

from __future__ import annotations

from edgefusion.export.manifest import ExportManifest


def format_summary(m: ExportManifest, out: str | None = None) -> str:
    """A few lines and one table: per graph size, precision mix, SQNR; end-to-end PSNR; time and memory."""
    src = m.source
    lines = [f"edgefusion export: {src['ref']} ({'random weights' if src['random_weights'] else src['kind']}) | "
             f"policy {m.policy['name']} | device {m.device}",
             f"calibration: {m.calibration['prompts']} prompts x {m.calibration['steps']} steps "
             f"-> {m.calibration['samples']['unet']} UNet samples (digest {m.calibration['digest']})", ""]
    head = f"{'graph':<13}{'MB':>8}  {'W8A8':>5} {'W8A16':>5} {'FP16':>5} {'FP32':>5}  {'Q/DQ':>9}  " \
           f"{'SQNR float':>10} {'SQNR quant':>10}"
    lines += [head, "-" * len(head)]
    for name, c in m.components.items():
        per = {"W8A8": 0, "W8A16": 0, "FP16": 0, "FP32": 0}
        for counts in c.layers.values():
            for p, n in counts.items():
                per[p] += n
        lines.append(f"{name:<13}{c.bytes / 1e6:>8.1f}  {per['W8A8']:>5} {per['W8A16']:>5} {per['FP16']:>5} "
                     f"{per['FP32']:>5}  {c.node_counts['QuantizeLinear']:>4}/{c.node_counts['DequantizeLinear']:<4}"
                     f"  {c.float_vs_torch_sqnr_db:>8.1f}dB {c.quant_vs_torch_sqnr_db:>8.1f}dB")
    promoted = {k: len((c.plan or {}).get("promoted_layers") or []) for k, c in m.components.items()}
    if any(promoted.values()):
        lines.append("promoted to W8A16 (a Conv/Gemm/Linear reads and writes one width): "
                     + ", ".join(f"{k} {n} layers" for k, n in promoted.items() if n)
                     + "; names in the manifest (components.<graph>.plan.promoted_layers)")
    e = m.end_to_end
    lines += ["", f"image PSNR vs PyTorch float ({e.get('steps')} steps): float ONNX "
                  f"{e.get('float_onnx_vs_torch_psnr_db')} dB, quantized {e.get('quantized_vs_torch_psnr_db')} dB",
              f"time {m.timings_s.get('total', 0):.1f} s, peak RSS {m.peak_rss_mb:.0f} MB"]
    sites = (m.tiling or {}).get("sites") or {}
    if (m.tiling or {}).get("enabled"):
        sqnr = [c.tiling.get("tiled_vs_untiled_sqnr_db") for c in m.components.values() if c.tiling]
        lines.append(f"attention tiling for {m.device}: {len(sites)} sites tiled"
                     + (f" (tiled vs untiled SQNR >= {min(sqnr)} dB)" if sqnr else ""))
    lat = m.latency
    if lat:
        parts = ", ".join(f"{k} {v['ms']:.1f} ms x{v['calls']}" for k, v in lat["components"].items())
        lines.append(f"estimated latency on {lat['device']} ({lat['backend']}): {lat['total_ms']:.1f} ms per image "
                     f"({lat['steps']} steps: {parts}); details in latency.json")
    q = m.qnn or {}
    if q.get("components"):
        figs = ", ".join(f"{k} {v['compiled']}/{v['of']}" + (f" {v['htp_vs_cpu_sqnr_db']} dB" if "htp_vs_cpu_sqnr_db"
                                                              in v else "") for k, v in q["components"].items())
        lines.append(f"QNN HTP ({q['device']}, emulated on x86): {q['graphs_compiled']}/{q['graphs_total']} graphs "
                     f"compiled, {q['cpu_nodes']} CPU nodes; emulated HTP vs CPU SQNR: {figs}; context binaries "
                     f"under qnn/ (no latency from the emulator)")
    lines += [f"note: {n}" for n in m.notes]
    lines += [f"WARNING: {w}" for w in m.warnings]
    if out:
        lines.append(f"written: {out}")
    return "\n".join(lines)
