"""Export a model under several policies and evaluate them in one run (default: the embedded model, default vs
w8a8 vs w8a16 vs fp16, against the PyTorch float pipeline and the float ONNX graphs).

    python eval/compare_policies.py --out DIR [--model embedded] [--policies default,w8a8,w8a16,fp16]
        [--prompts held-out:100] [--seed 0] [--calib-prompts 8] [--calib-steps N] [--verify-prompts 2]
        [--overwrite] [--json] [--no-progress] [--executor local|ray] [--ray-address auto|HOST:PORT]

--executor ray runs the per-policy exports as Ray tasks and the evaluation as one task per prompt.
Prints the table (PSNR/SSIM vs float, noise SQNR, attribute accuracy, latency estimate) and the wall time; the
full report is DIR/evaluation/report.html.
"""

from __future__ import annotations

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    """The script's arguments."""
    from edgefusion.executors.spec import add_executor_args

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default=None, help="as for `edgefusion export --model` (default: embedded)")
    ap.add_argument("--policies", default="default,w8a8,w8a16,fp16", help="comma-separated presets or files")
    ap.add_argument("--prompts", default="held-out:100",
                    help="held-out:N or a prompt file (default: the quality gate's 100 held-out prompts)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calib-prompts", type=int, default=8)
    ap.add_argument("--calib-steps", type=int, default=None)
    ap.add_argument("--verify-prompts", type=int, default=2)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    add_executor_args(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Export, evaluate, print the table; exit status 1 with one line on a reported error."""
    args = build_parser().parse_args(argv)
    from edgefusion.interrupt import exit_status, install_signal_handlers

    install_signal_handlers()  # SIGTERM/SIGHUP end it like Ctrl-C: the output's staging folder is removed
    from edgefusion.errors import EdgeFusionError
    from edgefusion.evaluation.compare import compare_policies
    from edgefusion.executors.spec import executor_from_args

    policies = tuple(p.strip() for p in args.policies.split(",") if p.strip())
    try:
        executor = executor_from_args(args)
        _, info = compare_policies(args.out, model=args.model, policies=policies, prompts=args.prompts,
                                   seed=args.seed, calib_prompts=args.calib_prompts, calib_steps=args.calib_steps,
                                   verify_prompts=args.verify_prompts, overwrite=args.overwrite,
                                   progress=not (args.no_progress or args.json), executor=executor)
    except EdgeFusionError as err:
        print(f"compare_policies: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print("compare_policies: interrupted; nothing was written", file=sys.stderr)
        return exit_status(err)
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        print(f"{info['n_prompts']} prompts ({info['prompts']}, seed {info['seed']}), {info['steps']} steps, "
              f"guidance {info['guidance_scale']:g}; calibration {info['calib_prompts']} prompts x "
              f"{info['calib_steps']} steps; wall time {info['wall_s']['total']:.0f} s")
        print(info["table"])
        print(f"{args.out}/evaluation/report.html")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
