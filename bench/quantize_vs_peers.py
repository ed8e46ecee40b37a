"""Peer benchmark: edgefusion's quantizer (each range method) vs onnxruntime quantize_static vs AIMET-ONNX, W8A8/W8A16.

Everyone starts from the SAME float ONNX UNet, the SAME calibration samples and the SAME held-out samples, captured
once with the project's own calibration code (the model's prompts, the real sampler, both CFG branches; held-out
prompts are other prompts, sampled with seed + 10000 as the export does). The sinusoidal timestep embedding
(``unet/time_proj``) stays float on every side, as the integer presets keep it.

* ours: ``quantize_graph`` under the ``w8a8`` / ``w8a16`` presets, once per range method that
  ``quantize_graph(method=...)`` offers (``edgefusion.quant.range_methods.METHODS``; formerly plain min/max where it had no
  such argument).
* onnxruntime ``quantize_static``: QDQ, int8 symmetric per-channel weights, uint8 / uint16 asymmetric activations
  (every activation 16-bit at W8A16), all op types it knows, time_proj's nodes in ``nodes_to_exclude``; MinMax,
  Percentile 99.999 and Entropy with 512 histogram bins (its default of 128 equals MinMax), all calibrated in
  chunks of ``--ort-chunk`` samples (``CalibStridedMinMax``) to bound its memory.
* AIMET-ONNX ``QuantizationSimModel`` (``--aimet-python``: a separate virtual environment with ``aimet-onnx``; run as
  a subprocess, arrays passed through files): default per-channel config, min_max / tf_enhanced / percentile, and
  SeqMSE (weights) + min_max; quantizers on the timestep path disabled. Judged through its own simulation session.

* oracle (a bound, not a method): ours with ranges fit on the held-out samples themselves (``minmax`` and ``mse``),
  so no range estimated from calibration samples can be expected to beat it by much: what is left to gain by range
  estimation at these bits on these samples.

Each method runs in its own process: wall time and peak RSS are of quantizing (capture and held-out evaluation
excluded); SQNR is of the noise prediction on the held-out samples vs the float graph. A peer that is not installed
is skipped with a message. Printed: one table, then ours-best vs best-peer (dB) and RSS ratios vs AIMET and ORT,
and the oracle bound.

    python bench/quantize_vs_peers.py                                   # embedded model, 64 samples over 8 steps
    python bench/quantize_vs_peers.py --model bk-sdm-tiny --samples 8 --steps 2 --verify 1 --resolution 256
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import capture_unet_samples, ort_reader, rss_mb, run_measured  # noqa: E402

BITS = {"w8a8": 8, "w8a16": 16}
ORT_METHODS = ("minmax", "percentile", "entropy")
AIMET_METHODS = ("min_max", "tf_enhanced", "percentile", "seq_mse")
DEFAULT_AIMET_PYTHON = "/work/venvs/aimet/bin/python"
AIMET_SCRIPT = Path(__file__).resolve().parent / "aimet_quantize.py"


# ----------------------------------------------------------------------------------------------------------- children
def prepare(args) -> dict:
    """Capture samples, export the float UNet, and record which tensors stay float (the timestep path)."""
    work = Path(args.work)
    info = capture_unet_samples(args.model, args.samples, args.steps, args.verify, work, args.seed, args.resolution)
    info["float_path"] = timestep_path(work / "float" / "model.onnx")
    (work / "prepare.json").write_text(json.dumps(info, indent=1))
    return info


def timestep_path(fpath: Path) -> dict:
    """Nodes and tensors that every side keeps float: the layers the integer presets keep FP32 (time_proj), the
    nodes between the graph inputs and them (e.g. the timestep's Unsqueeze/Cast), and the constants and constant
    subgraphs that feed only them (the frequency table: AIMET would otherwise quantize it to 8 bits).

    ``nodes``: node names (onnxruntime's ``nodes_to_exclude``); ``tensors``: tensors no quantizer may touch (AIMET);
    ``boundary``: tensors leaving that path into integer layers (quantized by every side, as their input).
    """
    from edgefusion.quant.layers import find_layers
    from edgefusion.quant.policy import load_policy
    from edgefusion.quant.quantize_graph import prepare_float_graph

    model = prepare_float_graph(fpath)
    spec = load_policy("w8a8")
    path_nodes = {n for layer in find_layers(model, "unet") if not spec.precision_for(layer).is_integer
                  for n in layer.nodes}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for t in node.input:
            consumers.setdefault(t, []).append(node)
    inits = {i.name for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    path_tensors = {i.name for i in model.graph.input
                    if any(c.name in path_nodes for c in consumers.get(i.name, []))}
    changed = True
    while changed:  # forward from the inputs through data movement, backward through constant feeders
        changed = False
        for node in model.graph.node:
            if node.name in path_nodes:
                new = set(node.output) - path_tensors
            else:
                srcs = [i for i in node.input if i and i not in inits]
                fwd = srcs and all(s in path_tensors for s in srcs) and node.op_type in _DATA_MOVEMENT
                bwd = node.output and all(o not in outputs and consumers.get(o) and
                                          all(c.name in path_nodes for c in consumers[o]) for o in node.output)
                if not (fwd or bwd):
                    continue
                path_nodes.add(node.name)
                new, changed = set(node.output), True
            if new:
                path_tensors |= new
                changed = True
    path_tensors |= {t for t in inits if consumers.get(t) and all(c.name in path_nodes for c in consumers[t])}
    keep = {t for t in path_tensors if t not in outputs and all(c.name in path_nodes for c in consumers.get(t, []))}
    return {"nodes": sorted(path_nodes), "tensors": sorted(keep), "boundary": sorted(path_tensors - keep)}


_DATA_MOVEMENT = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Slice", "Split", "Expand",
                  "Cast", "Gather"}


def evaluate(model_path: Path, work: Path) -> list[np.ndarray]:
    """Noise predictions of ``model_path`` on the held-out samples, under the project's own session."""
    from edgefusion.calibration.capture import CalibrationSet
    from edgefusion.runtime.session import open_session, run_session

    ver = CalibrationSet.load(work / "ver")
    sess = open_session(model_path)
    return [run_session(sess, s.inputs)[0] for s in ver.samples["unet"]]


def sqnr_vs_float(outs: list[np.ndarray], work: Path) -> float:
    """Mean SQNR (dB) of ``outs`` vs the float graph's held-out outputs."""
    from edgefusion.metrics import mean_sqnr_db

    with np.load(work / "float_outputs.npz") as ref:
        return mean_sqnr_db([ref[f"arr_{i}"] for i in range(len(outs))], outs)


def child_float(args) -> dict:
    """Held-out outputs of the float graph (the reference)."""
    work = Path(args.work)
    outs = evaluate(work / "float" / "model.onnx", work)
    np.savez(work / "float_outputs.npz", *outs)
    return {"outputs": len(outs)}


def ours_methods() -> tuple[list[str], str]:
    """Our range methods (``--calibration-method``), and where the list came from."""
    from edgefusion.quant.range_methods import METHODS

    return list(METHODS), "edgefusion.quant.range_methods.METHODS"


ORACLE_METHODS = ("minmax", "mse")


def child_ours(args) -> dict:
    """edgefusion's quantize_graph under the w8a8/w8a16 preset with one range method; as the ``oracle`` child, with
    ranges fit on the held-out samples themselves (the bound, not a method)."""
    from edgefusion.calibration.capture import CalibrationSet
    from edgefusion.quant.policy import load_policy
    from edgefusion.quant.quantize_graph import quantize_graph

    work = Path(args.work)
    side = "oracle" if args.child == "oracle" else "ours"
    out = work / "runs" / f"{side}-{args.method}-{args.bits}" / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    fit = CalibrationSet.load(work / ("ver" if side == "oracle" else "cal"))
    quantize_graph(work / "float" / "model.onnx", out, "unet", load_policy(args.bits),
                   [s.inputs for s in fit.samples["unet"]], method=args.method,
                   groups=[s.prompt_index for s in fit.samples["unet"]])
    wall, rss = time.perf_counter() - t, rss_mb()
    del fit
    return {"wall_s": wall, "peak_rss_mb": rss, "sqnr_db": sqnr_vs_float(evaluate(out, work), work)}


def child_ort(args) -> dict:
    """onnxruntime quantize_static (QDQ), everything it quantizes except the timestep path."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    from edgefusion.calibration.capture import CalibrationSet

    work = Path(args.work)
    fpath = work / "float" / "model.onnx"
    out = work / "runs" / f"ort-{args.method}-{args.bits}" / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    excl = json.loads((work / "prepare.json").read_text())["float_path"]["nodes"]
    act = QuantType.QUInt16 if BITS[args.bits] == 16 else QuantType.QUInt8
    t = time.perf_counter()
    cal = CalibrationSet.load(work / "cal")
    feeds = [s.inputs for s in cal.samples["unet"]]
    chunk = max(1, min(args.ort_chunk, len(feeds)))
    while len(feeds) % chunk:  # CalibStridedMinMax needs a divisor of the sample count
        chunk -= 1
    extra = {"ActivationSymmetric": False, "WeightSymmetric": True}
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[args.method]
    cache = None
    # chunked calibration bounds the calibrator's memory; CalibStridedMinMax, not CalibMaxIntermediateOutputs, which
    # in onnxruntime 1.32 drops each full chunk without computing its ranges (onnxruntime issue 18893)
    if args.method in ("minmax", "percentile"):
        extra["CalibStridedMinMax"] = chunk
        if args.method == "percentile":
            extra["CalibPercentile"] = 99.999
    else:  # quantize_static cannot set Entropy's bins: calibrate with onnxruntime's own calibrator, hand it the ranges
        with tempfile.TemporaryDirectory(prefix="ort-entropy-") as tmp:
            calib = create_calibrator(fpath, None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                      calibrate_method=method, use_external_data_format=True,
                                      extra_options={"num_bins": args.entropy_bins, "num_quantized_bins": 128})
            reader = ort_reader(feeds)
            for start in range(0, len(feeds), chunk):
                reader.set_range(start, start + chunk)
                calib.collect_data(reader)
            cache = out.parent / "entropy_ranges.json"
            save_tensors_data(calib.compute_data(), cache)
            del calib
    quantize_static(str(fpath), str(out), None if cache else ort_reader(feeds), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=act, weight_type=QuantType.QInt8, calibrate_method=method,
                    nodes_to_exclude=excl, use_external_data_format=True, extra_options=extra,
                    calibration_cache_path=str(cache) if cache else None)
    wall, rss = time.perf_counter() - t, rss_mb()
    del cal, feeds
    return {"wall_s": wall, "peak_rss_mb": rss, "sqnr_db": sqnr_vs_float(evaluate(out, work), work),
            "settings": {"chunk": chunk, **({"entropy_bins": args.entropy_bins} if args.method == "entropy" else {}),
                         **({"percentile": 99.999} if args.method == "percentile" else {})}}


# ------------------------------------------------------------------------------------------------------ orchestration
def _self_cmd(args, child: str) -> list[str]:
    cmd = [sys.executable, __file__, "--child", child, "--work", str(args.work), "--model", args.model,
           "--samples", str(args.samples), "--steps", str(args.steps), "--verify", str(args.verify),
           "--seed", str(args.seed), "--ort-chunk", str(args.ort_chunk), "--entropy-bins", str(args.entropy_bins)]
    if args.resolution:
        cmd += ["--resolution", str(args.resolution)]
    return cmd


def _aimet_cmd(args, method: str, bits: str, out: Path) -> list[str]:
    work = Path(args.work)
    return [args.aimet_python, str(AIMET_SCRIPT), "--float", str(work / "float" / "model.onnx"),
            "--cal", str(work / "cal.npz"), "--ver", str(work / "ver.npz"), "--keep-float",
            str(work / "prepare.json"), "--scheme", method, "--act-bits", str(BITS[bits]), "--out", str(out)]


def aimet_available(python: str) -> str | None:
    """None when ``python`` can import aimet_onnx, else why not (one line)."""
    import subprocess

    if not Path(python).is_file():
        return f"no interpreter at {python} (install: python3 -m venv DIR && DIR/bin/pip install aimet-onnx)"
    res = subprocess.run([python, "-c", "import aimet_onnx"], capture_output=True, text=True)
    if res.returncode:
        return (res.stderr.strip().splitlines() or ["import aimet_onnx failed"])[-1][:200]
    return None


def aimet_versions(python: str, freeze_to: Path | None = None) -> dict:
    """aimet-onnx, torch, onnxruntime, onnx and numpy versions of the AIMET environment; its whole ``pip freeze``
    goes to ``freeze_to`` (local wheels show there as ``name @ file://...``, hence the metadata query)."""
    import subprocess

    code = ("import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
            "('aimet-onnx', 'torch', 'onnxruntime', 'onnx', 'numpy')}))")
    res = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if freeze_to is not None:
        freeze = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True).stdout
        freeze_to.write_text(freeze)
    return json.loads(res.stdout) if res.returncode == 0 else {"error": res.stderr.strip()[-200:]}


def run_aimet(args, method: str, bits: str) -> dict:
    """One AIMET method in the AIMET environment; SQNR computed here from the outputs it wrote."""
    work = Path(args.work)
    out = work / "runs" / f"aimet-{method}-{bits}" / "outputs.npz"
    res = run_measured(_aimet_cmd(args, method, bits, out), out.parent / "log", args.timeout)
    if "error" in res:
        return res
    from edgefusion.metrics import mean_sqnr_db

    with np.load(out) as got, np.load(work / "float_outputs.npz") as ref:
        n = len(ref.files)
        res["sqnr_db"] = mean_sqnr_db([ref[f"arr_{i}"] for i in range(n)], [got[f"arr_{i}"] for i in range(n)])
    return res


def _fmt(r: dict, key: str, spec: str) -> str:
    return format(r[key], spec) if r.get(key) is not None else "-"


def report(info: dict, rows: list[tuple[str, str, str, dict]], notes: list[str]) -> str:
    """The markdown table (one row per side/method/bits) and the ratios."""
    name = f"{info['model']} UNet, {info['height']}x{info['width']}, {info['cal_samples']} cal / " \
           f"{info['verify_samples']} held-out samples"
    lines = [f"| {name} | bits | UNet SQNR dB | wall s | peak RSS MB |", "|---|---|---|---|---|"]
    for side, method, bits, r in rows:
        if "error" in r:
            lines.append(f"| {side} {method} | {bits.upper()} | failed: {r['error']} | | |")
        else:
            lines.append(f"| {side} {method} | {bits.upper()} | {_fmt(r, 'sqnr_db', '.2f')} | "
                         f"{_fmt(r, 'wall_s', '.1f')} | {_fmt(r, 'peak_rss_mb', '.0f')} |")
    lines.append("")
    for bits in BITS:
        ok = [(s, m, r) for s, m, b, r in rows if b == bits and "error" not in r and r.get("sqnr_db") is not None]
        ours = [x for x in ok if x[0] == "ours"]
        peers = [x for x in ok if x[0] not in ("ours", "oracle")]
        oracle = [x for x in ok if x[0] == "oracle"]
        if not ours:
            continue
        best = max(ours, key=lambda x: x[2]["sqnr_db"])
        line = f"{bits.upper()}: ours best = {best[1]} {best[2]['sqnr_db']:.2f} dB"
        if peers:
            bp = max(peers, key=lambda x: x[2]["sqnr_db"])
            line += (f"; best peer = {bp[0]} {bp[1]} {bp[2]['sqnr_db']:.2f} dB; "
                     f"difference {best[2]['sqnr_db'] - bp[2]['sqnr_db']:+.2f} dB")
        for peer in ("aimet", "ort"):
            pr = [x for x in peers if x[0] == peer]
            if pr:
                low = min(pr, key=lambda x: x[2]["peak_rss_mb"])  # the strictest: that peer's leanest method
                line += (f"; peak RSS ours-best / {peer}-lowest ({low[1]}) = {best[2]['peak_rss_mb']:.0f} / "
                         f"{low[2]['peak_rss_mb']:.0f} MB = {best[2]['peak_rss_mb'] / low[2]['peak_rss_mb']:.2f}")
        lines.append(line)
        if oracle:
            top = max(oracle, key=lambda x: x[2]["sqnr_db"])
            line = (f"{bits.upper()}: oracle bound (ranges fit on the held-out samples themselves, not a method) = "
                    f"{top[1]} {top[2]['sqnr_db']:.2f} dB, ours best {best[2]['sqnr_db'] - top[2]['sqnr_db']:+.2f} dB "
                    f"from it")
            if peers:
                line += f"; best peer + 3 dB = {bp[2]['sqnr_db'] + 3:.2f} dB"
            lines.append(line)
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded", help="embedded (default), a preset (bk-sdm-tiny ...) or a folder")
    ap.add_argument("--samples", type=int, default=64, help="UNet calibration samples (default 64)")
    ap.add_argument("--steps", type=int, default=8, help="denoising steps sampled per prompt (default 8)")
    ap.add_argument("--verify", type=int, default=2, help="held-out prompts (x steps x CFG branches samples)")
    ap.add_argument("--resolution", type=int, default=None, help="image size in pixels (default: the model's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bits", default="w8a8,w8a16", help="comma list of w8a8, w8a16")
    ap.add_argument("--peers", default="ours,ort,aimet,oracle", help="comma list of ours, ort, aimet, oracle (the "
                                                                      "bound: ranges fit on the held-out samples)")
    ap.add_argument("--ours-methods", default="auto", help="comma list, or auto (every method quantize_graph offers)")
    ap.add_argument("--ort-methods", default=",".join(ORT_METHODS))
    ap.add_argument("--aimet-methods", default=",".join(AIMET_METHODS))
    ap.add_argument("--aimet-python", default=DEFAULT_AIMET_PYTHON, help="python of a venv with aimet-onnx")
    ap.add_argument("--ort-chunk", type=int, default=16,
                    help="onnxruntime calibrates this many samples at a time (bounds its memory)")
    ap.add_argument("--entropy-bins", type=int, default=512,
                    help="histogram bins for onnxruntime's Entropy (its default 128 equals MinMax; its threshold search is "
                         "pure Python, quadratic in the bins: 2048 ran > 11 min on the 4M-parameter embedded UNet)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per method before it is counted failed")
    ap.add_argument("--work", default=None, help="work folder (default: a new temporary folder)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the float graph and samples already in --work (e.g. to rerun one side)")
    ap.add_argument("--json", default=None, help="also write all results to this JSON file")
    ap.add_argument("--peers-from", default=None,
                    help="a --json file of an earlier run on the same samples: show its rows of the sides not run now")
    ap.add_argument("--child", choices=["prepare", "float", "ours", "ort", "oracle"], help=argparse.SUPPRESS)
    ap.add_argument("--method", default="", help=argparse.SUPPRESS)
    ap.add_argument("--bits-one", dest="bits_one", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for b in _split(args.bits):
        if b not in BITS:
            ap.error(f"--bits: unknown '{b}' (use w8a8, w8a16)")
    for p in _split(args.peers):
        if p not in ("ours", "ort", "aimet", "oracle"):
            ap.error(f"--peers: unknown '{p}' (use ours, ort, aimet, oracle)")
    for m in _split(args.ort_methods):
        if m not in ORT_METHODS:
            ap.error(f"--ort-methods: unknown '{m}' (use {', '.join(ORT_METHODS)})")
    for m in _split(args.aimet_methods):
        if m not in AIMET_METHODS:
            ap.error(f"--aimet-methods: unknown '{m}' (use {', '.join(AIMET_METHODS)})")
    return args


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> int:
    """Run every side in its own process and print the table."""
    args = parse_args(argv)
    if args.child:
        if args.child in ("ours", "ort", "oracle"):
            args.bits = args.bits_one
        fn = {"prepare": prepare, "float": child_float, "ours": child_ours, "ort": child_ort,
              "oracle": child_ours}[args.child]
        print(json.dumps(fn(args)))
        return 0
    args.work = Path(args.work or tempfile.mkdtemp(prefix="ef-peers-"))
    args.work.mkdir(parents=True, exist_ok=True)
    peers, bits_list, notes = _split(args.peers), _split(args.bits), []
    reuse = args.reuse and (args.work / "prepare.json").is_file() and (args.work / "float_outputs.npz").is_file()
    if reuse:  # the same float graph and samples as an earlier run in this folder
        info = json.loads((args.work / "prepare.json").read_text())
        if (info["model"], info["cal_samples"], info["steps"]) != (args.model, args.samples, args.steps):
            raise SystemExit(f"--reuse: {args.work} holds {info['model']} with {info['cal_samples']} samples over "
                             f"{info['steps']} steps; pass the same --model/--samples/--steps or another --work")
    else:  # the model lives in its own process: this one must stay small for the children's peak RSS to be their own
        info = run_measured(_self_cmd(args, "prepare"), args.work / "logs" / "prepare")
        if "error" in info:
            raise SystemExit(f"prepare failed: {info['error']} (log: {args.work / 'logs'})")
    print(f"[{args.model}] {info['height']}x{info['width']}: capture {info['calibration_s']:.1f} s, float UNet export "
          f"{info['export_s']:.1f} s, {info['cal_samples']} calibration / {info['verify_samples']} held-out samples "
          f"(digest {info['digest']}); float on every side: {len(info['float_path']['nodes'])} timestep-path nodes",
          flush=True)
    ref = {} if reuse else run_measured(_self_cmd(args, "float"), args.work / "logs" / "float")
    if "error" in ref:
        raise SystemExit(f"float reference failed: {ref['error']}")
    jobs: list[tuple[str, str, str]] = []
    versions = _our_versions()
    if "ours" in peers:
        if args.ours_methods == "auto":
            methods, how = _ask_ours_methods(args)
            notes.append(f"ours' range methods: {', '.join(methods)} ({how})")
        else:
            methods = _split(args.ours_methods)
        jobs += [("ours", m, b) for b in bits_list for m in methods]
    if "ort" in peers:
        jobs += [("ort", m, b) for b in bits_list for m in _split(args.ort_methods)]
    if "oracle" in peers:
        jobs += [("oracle", m, b) for b in bits_list for m in ORACLE_METHODS]
    if "aimet" in peers:
        why = aimet_available(args.aimet_python)
        if why:
            notes.append(f"AIMET skipped: {why}")
            print(f"AIMET skipped: {why}", flush=True)
        else:
            versions["aimet_env"] = aimet_versions(args.aimet_python, args.work / "aimet_pip_freeze.txt")
            jobs += [("aimet", m, b) for b in bits_list for m in _split(args.aimet_methods)]
    rows = []
    for side, method, bits in jobs:
        if side == "aimet":
            r = run_aimet(args, method, bits)
        else:
            cmd = _self_cmd(args, side) + ["--method", method, "--bits-one", bits]
            r = run_measured(cmd, args.work / "runs" / f"{side}-{method}-{bits}" / "log", args.timeout)
        rows.append((side, method, bits, r))
        shown = "failed: " + r["error"] if "error" in r else \
            f"{r['sqnr_db']:.2f} dB, {r['wall_s']:.1f} s, {r['peak_rss_mb']:.0f} MB"
        print(f"  {side:5s} {method:12s} {bits:6s} {shown}", flush=True)
    if args.peers_from:  # rows of other sides measured earlier on the very same samples
        old = json.loads(Path(args.peers_from).read_text())
        if old["info"]["digest"] != info["digest"]:
            raise SystemExit(f"--peers-from: {args.peers_from} was measured on other samples (digest "
                             f"{old['info']['digest']} vs {info['digest']}); rerun the peers or use its --work")
        ran = {side for side, _, _ in jobs}
        rows += [(r["side"], r["method"], r["bits"], r) for r in old["results"] if r["side"] not in ran]
        notes.append(f"rows of {', '.join(sorted({r['side'] for r in old['results']} - ran))} from "
                     f"{args.peers_from} (same samples, measured in an earlier run)")
    table = report(info, rows, notes)
    print("\n" + table)
    print(f"\nversions: {json.dumps(versions)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "versions": versions, "notes": notes,
                                               "results": [{"side": s, "method": m, "bits": b, **r}
                                                           for s, m, b, r in rows]}, indent=1))
    return 0


def _ask_ours_methods(args) -> tuple[list[str], str]:
    """ours_methods() in a child (it imports edgefusion's quantizer; this process stays small)."""
    import subprocess

    code = ("import json,sys; sys.path.insert(0, %r); from quantize_vs_peers import ours_methods; "
            "print(json.dumps(ours_methods()))" % str(Path(__file__).resolve().parent))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if res.returncode:
        return ["minmax"], "could not inspect quantize_graph: " + (res.stderr.strip().splitlines() or ["?"])[-1]
    methods, how = json.loads(res.stdout.strip().splitlines()[-1])
    return methods, how


def _our_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("edgefusion", "onnxruntime", "onnx", "torch", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


if __name__ == "__main__":
    raise SystemExit(main())
