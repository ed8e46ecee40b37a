"""``edgefusion latency``: one flag per keyword of :func:`edgefusion.deploy.estimate.estimate_export` /
:func:`edgefusion.deploy.estimate.estimate_model`."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    """Register the sub-command."""
    p = sub.add_parser("latency", help="estimate NPU latency of an export folder or an architecture",
                       description="Estimate one image's latency on an NPU device profile (emulated roofline model, "
                                   "or a vendor backend when its SDK is installed), per component, block and kernel.")
    p.add_argument("export_dir", nargs="?", default=None, help="an export folder (or use --model)")
    p.add_argument("--model", default=None,
                   help="estimate straight from an architecture: preset (sd-v1.5, bk-sdm-tiny, ...), 'embedded' or "
                        "a local diffusers folder (no weights are loaded)")
    p.add_argument("--mpq-policy", default="default", help="policy for --model (preset name or YAML path)")
    p.add_argument("--device", default=None,
                   help="device profile name or YAML path (default: the export's device, else exynos2400)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps per image (default: the model's)")
    p.add_argument("--guidance-scale", type=float, default=None,
                   help="> 1 doubles text-encoder and UNet calls (classifier-free guidance); default: the model's")
    p.add_argument("--height", type=int, default=None, help="image height for --model (default: the model's)")
    p.add_argument("--width", type=int, default=None, help="image width for --model (default: the model's)")
    p.add_argument("--no-tiling", action="store_true", help="for --model: estimate without attention tiling")
    p.add_argument("--backend", default="auto", help="latency backend: auto, emulated, or a registered plug-in")
    p.add_argument("--json", action="store_true", help="print the full report (per kernel) as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    """Execute ``edgefusion latency``."""
    from edgefusion.errors import EdgeFusionError

    if (args.export_dir is None) == (args.model is None):
        raise EdgeFusionError("give either an export folder or --model, not both or neither",
                              "e.g. `edgefusion latency edgefusion-export/embedded-default` or "
                              "`edgefusion latency --model sd-v1.5`")
    if args.export_dir is not None:
        if args.no_tiling or args.height or args.width or args.mpq_policy != "default":
            raise EdgeFusionError("--no-tiling, --height, --width and --mpq-policy apply to --model only; an "
                                  "export folder is estimated as it was written",
                                  "re-export with the settings you want, or use --model")
        from edgefusion.deploy.estimate import estimate_export

        report = estimate_export(args.export_dir, device=args.device, steps=args.steps,
                                 guidance_scale=args.guidance_scale, backend=args.backend)
    else:
        from edgefusion.deploy.estimate import estimate_model

        report = estimate_model(model=args.model, mpq_policy=args.mpq_policy, device=args.device or "exynos2400",
                                steps=args.steps, tiling=not args.no_tiling, guidance_scale=args.guidance_scale,
                                height=args.height, width=args.width, backend=args.backend)
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.format())
    return 0
