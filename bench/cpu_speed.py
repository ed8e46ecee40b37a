"""CPU speed of the quantized UNet against the float UNet under onnxruntime, side by side in one run.

One intra-op thread, batch 1, the project's own session options (``edgefusion.runtime.session.open_session``) and,
for comparison, onnxruntime's defaults. The quantized graphs carry int32 biases, so onnxruntime fuses
``DQ -> Conv/Gemm -> Q`` into integer kernels (QLinearConv, QGemm); the ratio says what that buys on this CPU.

Each policy's UNet is timed twice: ``untiled`` (as the quantizer writes it) and ``exported``: the graph
``edgefusion export --device DEVICE`` writes (``npu.onnx``: the deploy form, then the attention tiled where the
device's latency model says it pays; tiling computes the same values, the export verifies it). The float UNet is
timed as diffusers' graph and, as a reference for what tiling alone does on this CPU, tiled for the same device
(``vs float tiled``). ``--device none``: no tiling.

    python bench/cpu_speed.py                              # embedded model
    python bench/cpu_speed.py --model bk-sdm-tiny --calib-samples 4 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _time_interleaved(sessions: dict, feed: dict, repeats: int, block: int = 5) -> dict:
    """Median seconds per run of each session, timed in rounds so that a slow drift of the shared machine's speed
    reaches every session alike: each round runs every session ``block`` + 1 times in a row (the first run after a
    switch re-warms its caches and is not counted), in a rotating order, until ``repeats`` runs are counted each."""
    from edgefusion.runtime.session import run_session

    names = list(sessions)
    times: dict[str, list[float]] = {n: [] for n in names}
    rounds = -(-repeats // block)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            run_session(sessions[name], feed)  # re-warm after the switch
            for _ in range(block):
                t = time.perf_counter()
                run_session(sessions[name], feed)
                times[name].append(time.perf_counter() - t)
    return {n: statistics.median(v[:repeats]) for n, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--policies", default="default,w8a8,w8a16")
    ap.add_argument("--calib-samples", type=int, default=16, help="UNet calibration samples (ranges do not change "
                                                                   "the speed)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="exynos2400", help="device profile the export tiles for (the export's "
                                                           "default); 'none': untiled rows only")
    args = ap.parse_args(argv)

    import onnx
    import onnxruntime as ort

    from edgefusion.calibration.capture import capture_calibration
    from edgefusion.calibration.prompts import read_prompts, split_prompts
    from edgefusion.deploy.tiling import tile_graph_file
    from edgefusion.export.deploy_form import apply_deploy_form
    from edgefusion.latency.device import load_device
    from edgefusion.models.torch_to_onnx import export_component
    from edgefusion.models.source import load_pipeline, resolve_model_source
    from edgefusion.quant.policy import load_policy
    from edgefusion.quant.quantize_graph import quantize_graph
    from edgefusion.runtime.session import open_session

    src = resolve_model_source(args.model)
    pipe = load_pipeline(src, quiet=True)
    s = src.sampler
    steps = max(1, min(s.num_inference_steps, args.calib_samples // 2))
    cal_p, _ = split_prompts(read_prompts(src.prompts_file), max(2, args.calib_samples // (2 * steps)), 0)
    cal = capture_calibration(pipe, cal_p, steps, s.guidance_scale, s.height, s.width, progress=False)
    samples = cal.samples["unet"][:args.calib_samples]
    device = None if args.device == "none" else load_device(args.device)

    def tiled_copy(path: Path) -> tuple[Path | None, int]:
        """``path``'s graph with the attention tiled for the device, beside it (its external weights shared);
        (None, 0) when the device's latency model tiles nothing."""
        out = path.with_name("tiled.onnx")
        decided = tile_graph_file(path, "unet", device, out) if device else {}
        return (out, len(decided)) if decided else (None, 0)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fpath = export_component(pipe, "unet", samples[0].inputs, work / "float" / "model.onnx")
        del pipe
        feed = samples[-1].inputs
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sessions = {("float", "project"): open_session(fpath, threads=1),
                    ("float", "default"): ort.InferenceSession(str(fpath), opts, providers=["CPUExecutionProvider"])}
        ftiled, n_float = tiled_copy(fpath)
        if ftiled:
            sessions[("float tiled", "project")] = open_session(ftiled, threads=1)
        fused, sites = {}, {}
        storage = {"storage": device.storage_needs()} if device else {}
        for i, policy in enumerate(args.policies.split(",")):
            label = Path(policy).stem  # a preset name or a policy file's name
            folder = work / f"q{i}"  # never the policy's own path (an absolute path would replace ``work``)
            qg = quantize_graph(fpath, folder / "model.onnx", "unet", load_policy(policy),
                                [x.inputs for x in samples], groups=[x.prompt_index for x in samples],
                                method="minmax", weight_rounding="nearest", **storage)  # values: same speed
            apply_deploy_form(qg.path, "unet")
            opt = folder / "optimized.onnx"
            sessions[(label, "project")] = open_session(qg.path, threads=1, optimized_model_path=opt)
            sessions[(label, "default")] = ort.InferenceSession(str(qg.path), opts, providers=["CPUExecutionProvider"])
            ops = Counter(n.op_type for n in onnx.load(str(opt), load_external_data=False).graph.node)
            fused[label] = ", ".join(f"{k} {ops[k]}" for k in ("QLinearConv", "QGemm", "QLinearMatMul",
                                                               "MatMulInteger", "QLinearAdd") if ops[k])
            tiled, sites[label] = tiled_copy(qg.path)
            if tiled:
                sessions[(f"{label} exported", "project")] = open_session(tiled, threads=1)
                sessions[(f"{label} exported", "default")] = ort.InferenceSession(
                    str(tiled), opts, providers=["CPUExecutionProvider"])
        med = _time_interleaved(sessions, feed, args.repeats)
        print(f"{args.model} UNet, 1 thread, batch 1, median of {args.repeats} runs, in interleaved blocks of 5 "
              f"(onnxruntime {ort.__version__}); 'exported': tiled for {args.device} as the export writes it "
              f"({', '.join(f'{k} {v} attention sites' for k, v in sites.items())}; float tiled: {n_float})")
        print(f"{'graph':<20}{'session':<10}{'ms':>9}{'vs float':>10}{'vs float tiled':>16}  integer kernels")
        for (label, kind), t in med.items():
            vs_tiled = (f"{t / med[('float tiled', 'project')]:>16.2f}"
                        if kind == "project" and ("float tiled", "project") in med else f"{'':>16}")
            print(f"{label:<20}{kind:<10}{t * 1e3:>9.2f}{t / med[('float', kind)]:>10.2f}{vs_tiled}  "
                  f"{fused.get(label, '') if kind == 'project' else ''}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
