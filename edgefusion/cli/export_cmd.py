"""``edgefusion export``: one flag per keyword of :func:`edgefusion.export.run_export.export`."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    """Register the sub-command."""
    from edgefusion.executors.spec import add_executor_args

    p = sub.add_parser("export", help="export, quantize and verify a Stable Diffusion model",
                       description="Export text encoder, UNet and VAE decoder to ONNX, quantize them under a "
                                   "mixed-precision policy (QDQ), verify every graph and write an export folder.")
    p.add_argument("--model", default=None,
                   help="preset (tiny, sd-v1.5, bk-sdm-base, bk-sdm-small, bk-sdm-tiny) or a local diffusers "
                        "folder; default: the embedded default model")
    p.add_argument("--mpq-policy", default="default",
                   help="policy preset (default, recipe, w8a8, w8a16, fp16), YAML path, or auto (per layer, from "
                        "the UNet's sensitivity; see edgefusion profile)")
    p.add_argument("--target-sqnr", type=float, default=None, help="auto: cheapest policy with this UNet SQNR (dB)")
    p.add_argument("--latency-budget-ms", type=float, default=None,
                   help="auto: best quality within this UNet latency per image (ms on --device, from the latency "
                        "model); default for auto: the latency of the default policy")
    p.add_argument("--sensitivity", default=None, help="auto: a report folder from edgefusion profile (same model "
                                                       "and calibration) instead of profiling inside the export")
    p.add_argument("--calibration-method", default=None,
                   help="activation ranges: crossval (default: min/max widened per bit width by the factor that "
                        "quantizes held-out calibration prompts best), minmax, or mse (clipping by least error)")
    p.add_argument("--weight-rounding", default="gptq",
                   help="int8 weights of linear layers that read 16-bit tensors: gptq (default: rounded against "
                        "their calibration inputs, GPTQ) or nearest")
    p.add_argument("--device", default="exynos2400",
                   help="device profile: exynos2400, exynos2200, snapdragon8gen3, generic, or a profile YAML path")
    p.add_argument("--backend", default="auto", choices=("auto", "emulated", "qnn"),
                   help="vendor compile/verify step: qnn compiles every graph for the Snapdragon HTP (needs "
                        "pip install 'edgefusion[qnn]'); auto does so when the device is a Snapdragon and the extra "
                        "is installed; emulated never")
    p.add_argument("--htp-samples", type=int, default=4,
                   help="verification inputs per graph run on the emulated HTP (x86 emulation is slow)")
    p.add_argument("--no-tiling", action="store_true", help="do not tile attention for the device's SRAM")
    p.add_argument("--max-graph-mb", type=float, default=None,
                   help="per-graph weight limit in MB (default: the device profile's); larger graphs are split")
    p.add_argument("--out", default=None, help="output folder (default: edgefusion-export/<model>-<policy>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--calib-prompts", type=int, default=8, help="calibration prompts (x steps x CFG branches)")
    p.add_argument("--calib-steps", type=int, default=None, help="denoising steps sampled during calibration")
    p.add_argument("--verify-prompts", type=int, default=2, help="held-out prompts used for verification")
    p.add_argument("--prompts-file", default=None, help="UTF-8 prompt file (default: the shipped prompt set)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-pickle", action="store_true", help="allow loading .bin (pickle) weights")
    p.add_argument("--keep-float", action="store_true", help="keep the float ONNX graphs under float/")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (ours and the libraries' loading bars)")
    p.add_argument("--strict", action="store_true",
                   help="treat every warning as an error and write nothing: a quantized check image that does not "
                        "draw what the float one draws, a policy rule that matches no layer, a prompt the tokenizer "
                        "cuts; warnings are otherwise printed and listed in the manifest")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON instead of the summary")
    add_executor_args(p)  # auto: where its profiling step runs
    p.set_defaults(run=run)


def run(args) -> int:
    """Execute ``edgefusion export``."""
    from edgefusion.executors.spec import executor_from_args
    from edgefusion.export.run_export import default_out_dir, export
    from edgefusion.export.summary import format_summary
    from edgefusion.models.source import DEFAULT_MODEL

    out = args.out or str(default_out_dir(args.model or DEFAULT_MODEL, args.mpq_policy))
    manifest = export(model=args.model, mpq_policy=args.mpq_policy, device=args.device, out=out,
                      overwrite=args.overwrite, calib_prompts=args.calib_prompts, calib_steps=args.calib_steps,
                      verify_prompts=args.verify_prompts, prompts_file=args.prompts_file, seed=args.seed,
                      allow_pickle=args.allow_pickle, keep_float=args.keep_float,
                      progress=not (args.no_progress or args.json), tiling=not args.no_tiling,
                      max_graph_mb=args.max_graph_mb, target_sqnr=args.target_sqnr,
                      latency_budget_ms=args.latency_budget_ms, sensitivity=args.sensitivity,
                      calibration_method=args.calibration_method, strict=args.strict,
                      backend=args.backend, htp_samples=args.htp_samples, executor=executor_from_args(args),
                      weight_rounding=args.weight_rounding)
    print(json.dumps(manifest.to_dict(), indent=1) if args.json else format_summary(manifest, out))
    return 0
