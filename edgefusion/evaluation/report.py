"""The HTML report: settings, metric table, latency table, per-step plots and a side-by-side image grid
(float | default | w8a8 | ...). Images and plots are PNG files next to the page; an inline script writes a
self-check (every image decoded, tables present) into ``#selfcheck`` once the page has loaded."""

from __future__ import annotations

from html import escape
from pathlib import Path

from edgefusion.evaluation.alignment import ATTRIBUTES
from edgefusion.evaluation.latency_view import COMPONENTS, format_latency
from edgefusion.evaluation.results import EvalResult
from edgefusion.evaluation.variants import model_label

REPORT_FILE = "report.html"

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 8px 0 20px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
#grid td { text-align: center; vertical-align: top; }
#grid td.l { text-align: left; max-width: 260px; font-size: 12px; }
#grid img { width: 128px; height: auto; image-rendering: pixelated; display: block; margin: auto; }
figure { margin: 0; } figcaption { font-size: 11px; color: #555; }
.notes li { color: #8a4b00; } .settings { color: #444; } #selfcheck { color: #777; font-size: 11px; }
"""

_SELFCHECK = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; })
                   .map(function (i) { return i.getAttribute('src'); });
  var out = {images: imgs.length, broken: broken,
             metric_rows: document.querySelectorAll('#metrics tbody tr').length,
             grid_rows: document.querySelectorAll('#grid tbody tr').length};
  var el = document.getElementById('selfcheck');
  el.textContent = JSON.stringify(out);
  el.setAttribute('data-state', broken.length === 0 ? 'ok' : 'broken');
});
"""


def _num(x, fmt: str = "{:.2f}", missing: str = "—") -> str:
    return missing if x is None else fmt.format(x)


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _metric_table(result: EvalResult) -> str:
    summ = result.summary
    has = {k: any(s.get(k) is not None for s in summ.values())
           for k in ("attribute_accuracy", "clip_score", "fid", "fid_vs_float")}
    head = ["variant", "images", "PSNR vs float (dB)", "SSIM vs float", "noise SQNR, mean over steps (dB)",
            "latent PSNR, last step (dB)"]
    if has["attribute_accuracy"]:
        head += ["attributes: all five", *ATTRIBUTES]
    if has["clip_score"]:
        head.append("CLIP score")
    if has["fid"]:
        head.append("FID vs reference stats")
    if has["fid_vs_float"]:
        head.append("FID vs float images")
    head.append("latency estimate")
    rows = []
    for v in result.spec.variants:
        s = summ.get(v.key, {})
        cells = [f'<td class="l">{escape(v.label)}</td>', f"<td>{s.get('images', 0)}</td>",
                 f"<td>{_num(s.get('psnr_db'))}</td>", f"<td>{_num(s.get('ssim'), '{:.4f}')}</td>",
                 f"<td>{_num(s.get('noise_sqnr_db_mean'))}</td>", f"<td>{_num(s.get('latent_psnr_db_final'))}</td>"]
        if has["attribute_accuracy"]:
            acc = s.get("attribute_accuracy") or {}
            cells += [f"<td>{_pct(acc.get(k))}</td>" for k in ("all", *ATTRIBUTES)]
        for k, fmt in (("clip_score", "{:.2f}"), ("fid", "{:.4g}"), ("fid_vs_float", "{:.4g}")):
            if has[k]:
                cells.append(f"<td>{_num(s.get(k), fmt)}</td>")
        cells.append(f"<td>{escape(format_latency(s.get('latency'))) if v.kind == 'export' else '—'}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    th = "".join(f'<th{" class=l" if i == 0 else ""}>{escape(h)}</th>' for i, h in enumerate(head))
    foot = []
    if has["attribute_accuracy"]:
        n = max(s.get("attribute_images", 0) for s in summ.values())
        total = max(s.get("images", 0) for s in summ.values())
        foot.append(f"Attribute accuracy over the {n} of {total} images whose prompt is a shapes-dataset caption.")
    if has["fid"] or has["fid_vs_float"]:
        n = max(s.get("fid_images", 0) for s in summ.values())
        foot.append(f"FID over {n} images per variant (the usual protocols use thousands; few images bias it up).")
    foot_html = "".join(f"<p><small>{escape(f)}</small></p>" for f in foot)
    return f'<table id="metrics"><thead><tr>{th}</tr></thead><tbody>{"".join(rows)}</tbody></table>{foot_html}'


def _latency_table(result: EvalResult) -> str:
    head = ["export", "device", "backend", "steps", "tiled", "total per image (ms)"] + \
        [f"{c} (ms per call x calls)" for c in COMPONENTS]
    rows = []
    for v in result.spec.variants:
        if v.kind != "export":
            continue
        lat = v.latency
        if lat is None:
            rows.append(f'<tr><td class="l">{escape(v.label)}</td><td class="l" colspan="{len(head) - 1}">'
                        "not estimated</td></tr>")
            continue
        comps = []
        for c in COMPONENTS:
            e = lat["components"].get(c)
            comps.append("—" if e is None else f"{e['ms']:.2f} x {e['calls'] if e['calls'] is not None else '?'}")
        cells = [escape(v.label), escape(lat["device"]), escape(lat["backend"]), _num(lat["steps"], "{}"),
                 "yes" if lat["tiled"] else "no", f"{lat['total_ms']:.1f}", *comps]
        rows.append("<tr>" + "".join(f'<td{" class=l" if i < 3 else ""}>{c}</td>' for i, c in enumerate(cells))
                    + "</tr>")
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f'<table id="latency"><thead><tr>{th}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _grid(result: EvalResult, rows: int) -> str:
    variants = result.spec.variants
    by_key = {v.key: {r.prompt_index: r for r in result.records.get(v.key, [])} for v in variants}
    indices = sorted(by_key[variants[0].key])[:rows]
    texts = {p.index: p.text for p in result.spec.prompts.prompts}
    body = []
    for idx in indices:
        seed = by_key[variants[0].key][idx].seed
        cells = [f'<td class="l">{escape(texts.get(idx, "?"))}<br><small>seed {seed}</small></td>']
        for v in variants:
            r = by_key[v.key].get(idx)
            if r is None:
                cells.append("<td>—</td>")
                continue
            cap = "reference" if r.psnr_db is None and v.kind == "torch_float" else \
                f"{_num(r.psnr_db, '{:.1f}')} dB, SSIM {_num(r.ssim, '{:.3f}')}"
            cells.append(f'<td><figure><img src="{escape(r.image)}" alt="{escape(v.label)}, prompt {idx}">'
                         f"<figcaption>{cap}</figcaption></figure></td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    th = '<th class="l">prompt</th>' + "".join(f"<th>{escape(v.label)}</th>" for v in variants)
    return f'<table id="grid"><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def write_report(result: EvalResult, folder: str | Path, plots: dict[str, str], grid_rows: int = 16) -> Path:
    """Write ``<folder>/report.html`` for a result whose ``summary`` is filled; returns its path."""
    spec = result.spec
    title = f"edgefusion evaluation: {model_label(spec.model)}"
    shards = "whole prompt set" if result.shard_count == 1 else \
        f"shards {', '.join(map(str, sorted(result.shards)))} of {result.shard_count}" + \
        ("" if result.complete else " (PARTIAL: not every shard is in)")
    n_done = len(next(iter(result.records.values()), []))
    settings = (f"Prompts: {escape(spec.prompts.name)} ({len(spec.prompts.prompts)} prompts, digest "
                f"{spec.prompts.digest()}); {n_done} evaluated here ({escape(shards)}). Image k uses seed "
                f"{spec.seed} + k; {spec.steps} denoising steps, guidance {spec.guidance_scale:g}, "
                f"{spec.shapes.get('height', '?')}x{spec.shapes.get('width', '?')}. Reference: the PyTorch float "
                "pipeline (diffusers) with the same scheduler, seeds and initial latents.")
    notes = "".join(f"<li>{escape(n)}</li>" for n in result.notes)
    plot_html = "".join(f'<p><img src="{escape(p)}" alt="{escape(k)}"></p>' for k, p in plots.items()) or \
        "<p>No per-step data (no ONNX variant was evaluated).</p>"
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="settings">{settings}</p>
{f'<ul class="notes">{notes}</ul>' if notes else ''}
<h2>Metrics</h2>
<p>PSNR and SSIM of each image against the PyTorch float image of the same prompt and seed (mean over images);
noise SQNR and latent PSNR per denoising step against the same reference (mean over images; the plots below show
every step); attribute accuracy reads colour, shape, size, position and background back from each image (embedded
shapes model).</p>
{_metric_table(result)}
<h2>Latency estimate</h2>
{_latency_table(result)}
<h2>Per-step error</h2>
{plot_html}
<h2>Images</h2>
{_grid(result, grid_rows)}
<pre id="selfcheck" data-state="pending">self-check pending</pre>
<script>{_SELFCHECK}</script>
</body></html>
"""
    path = Path(folder) / REPORT_FILE
    path.write_text(html, encoding="utf-8")
    return path
