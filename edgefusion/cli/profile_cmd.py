"""``edgefusion profile``: one flag per keyword of :func:`edgefusion.sensitivity.run_profile.profile`."""

from __future__ import annotations


def add_parser(sub) -> None:
    """Register the sub-command."""
    from edgefusion.executors.spec import add_executor_args

    p = sub.add_parser("profile", help="per-layer quantization sensitivity of the UNet, and an automatic policy",
                       description="For every quantizable UNet layer and candidate precision (W8A8, W8A16, FP16): "
                                   "how much the noise prediction degrades (SQNR vs float) when only that layer is "
                                   "quantized, per denoising step and overall, and the leave-one-out view. Writes "
                                   "sensitivity.json (resumable), sensitivity.csv, plots, auto_policy.yaml and the "
                                   "quality-vs-cost frontier.")
    p.add_argument("--model", default=None, help="preset or local diffusers folder (default: the embedded model)")
    p.add_argument("--out", default=None, help="report folder (default: edgefusion-profile/<model>); an "
                                               "unfinished one is resumed")
    p.add_argument("--mpq-policy", default="w8a8", help="base policy of the leave-one-out view (default: w8a8)")
    p.add_argument("--calib-prompts", type=int, default=8, help="calibration prompts (x steps x CFG branches)")
    p.add_argument("--calib-steps", type=int, default=None, help="denoising steps sampled during calibration")
    p.add_argument("--verify-prompts", type=int, default=2,
                   help="held-out prompts the error is measured on (picked as export picks its verification "
                        "prompts; 0 = measure on the calibration samples themselves)")
    p.add_argument("--prompts-file", default=None, help="UTF-8 prompt file (default: the model's or shipped set)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", type=int, default=None,
                   help="profile at this image size (square) instead of the model's; the report records both")
    p.add_argument("--calibration-method", default=None,
                   help="activation ranges as the export estimates them: crossval (default), minmax or mse")
    p.add_argument("--probes", type=int, default=4, help="random output probes per sample (more = tighter)")
    p.add_argument("--max-samples", type=int, default=96, help="calibration samples profiled (whole prompts first)")
    p.add_argument("--target-sqnr", type=float, default=None, help="auto policy: cheapest with this UNet SQNR (dB)")
    p.add_argument("--latency-budget-ms", type=float, default=None,
                   help="auto policy: best quality within this UNet latency per image (ms on --device, the "
                        "latency model at the model's own size, steps and guidance); default budget: the "
                        "latency of the default policy")
    p.add_argument("--device", default="exynos2400",
                   help="device profile the layers are costed on: exynos2400, exynos2200, generic, a YAML path, or "
                        "none (a MAC/byte proxy in proxy-ms instead of the latency model)")
    p.add_argument("--check-layers", type=int, default=4, help="most sensitive layers re-measured exactly")
    p.add_argument("--memory-mb", type=int, default=2048, help="memory budget for stacking samples")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report folder")
    p.add_argument("--allow-pickle", action="store_true", help="allow loading .bin (pickle) weights")
    p.add_argument("--keep-work", action="store_true", help="keep .work/ (calibration set, float UNet graph)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (ours and the libraries' loading bars)")
    add_executor_args(p)
    p.set_defaults(run=run)


def run(args) -> int:
    """Execute ``edgefusion profile``."""
    import sys
    from pathlib import Path

    from edgefusion.executors.spec import executor_from_args
    from edgefusion.models.source import DEFAULT_MODEL
    from edgefusion.sensitivity.run_profile import default_profile_dir, profile
    from edgefusion.sensitivity.summary import format_profile_summary

    out = args.out or str(default_profile_dir(args.model or DEFAULT_MODEL))
    try:
        report = profile(model=args.model, out=out, mpq_policy=args.mpq_policy, calib_prompts=args.calib_prompts,
                         calib_steps=args.calib_steps, verify_prompts=args.verify_prompts,
                         prompts_file=args.prompts_file, seed=args.seed, resolution=args.resolution,
                         probes=args.probes, max_samples=args.max_samples, target_sqnr=args.target_sqnr,
                         latency_budget_ms=args.latency_budget_ms, check_layers=args.check_layers,
                         memory_mb=args.memory_mb, overwrite=args.overwrite, allow_pickle=args.allow_pickle,
                         keep_work=args.keep_work, progress=not args.no_progress,
                         device=None if args.device == "none" else args.device,
                         calibration_method=args.calibration_method, executor=executor_from_args(args))
    except KeyboardInterrupt as err:
        if not (Path(out) / "sensitivity.json").is_file():
            raise
        from edgefusion.interrupt import exit_status

        print(f"edgefusion: interrupted; run the same command again to resume the report in {out}", file=sys.stderr)
        return exit_status(err)
    print(format_profile_summary(report, out))
    return 0
