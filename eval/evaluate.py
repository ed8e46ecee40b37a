"""Image-quality evaluation of exports of one model against the PyTorch float pipeline.

    python eval/evaluate.py EXPORT [EXPORT ...] --prompts held-out:24|FILE --out DIR [--seed 0] [--steps N]
        [--guidance-scale G] [--shard i/n] [--no-float-onnx] [--low-memory] [--grid-rows 16]
        [--clip-score] [--clip-model DIR] [--fid] [--fid-inception FILE] [--fid-ref-stats FILE] [--protocol coco]
        [--overwrite] [--json] [--no-progress] [--executor local|ray] [--ray-address auto|HOST:PORT]

Writes DIR/report.html (grid, metric table, per-step plots, latency), DIR/results.json, DIR/images/, DIR/plots/.
--executor ray runs one Ray task per prompt (a local Ray instance, or the cluster at --ray-address) with the same
results. Shards (--shard i/n) are for batch schedulers without Ray; merge them with eval/merge_shards.py.
"""

from __future__ import annotations

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    """The script's arguments."""
    from edgefusion.executors.spec import add_executor_args

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("exports", nargs="+", help="export folders (edgefusion export) of one model")
    ap.add_argument("--prompts", default="held-out:24",
                    help="held-out:N (embedded model's held-out captions) or a UTF-8 file, one prompt per line")
    ap.add_argument("--out", required=True, help="output folder (refused if it exists, unless --overwrite)")
    ap.add_argument("--seed", type=int, default=0, help="image k uses seed + k (default 0)")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    ap.add_argument("--guidance-scale", type=float, default=None)
    ap.add_argument("--shard", default=None, help="i/n: evaluate only shard i of n of the prompt set")
    ap.add_argument("--no-float-onnx", action="store_true", help="skip the float ONNX column")
    ap.add_argument("--low-memory", action="store_true", help="open one ONNX graph at a time")
    ap.add_argument("--grid-rows", type=int, default=16, help="prompts shown in the image grid")
    ap.add_argument("--clip-score", action="store_true", help="CLIP score (needs --clip-model)")
    ap.add_argument("--clip-model", default=None, help="local CLIP folder (save_pretrained layout)")
    ap.add_argument("--fid", action="store_true", help="FID (needs --fid-inception)")
    ap.add_argument("--fid-inception", default=None, help="TorchScript feature network, e.g. inception-2015-12-05.pt")
    ap.add_argument("--fid-ref-stats", default=None, help=".npz with mu and sigma of the reference images' features")
    ap.add_argument("--protocol", choices=["coco"], default=None,
                    help="coco: CLIP score + FID vs MS-COCO statistics (all three files required)")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("--no-progress", action="store_true")
    add_executor_args(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; exit status 1 with one line on a reported error."""
    args = build_parser().parse_args(argv)
    from edgefusion.interrupt import exit_status, install_signal_handlers

    install_signal_handlers()  # SIGTERM/SIGHUP end it like Ctrl-C: the output's staging folder is removed
    from edgefusion.errors import EdgeFusionError
    from edgefusion.evaluation.options import MetricOptions
    from edgefusion.evaluation.prompts import load_prompt_set
    from edgefusion.evaluation.run import evaluate
    from edgefusion.evaluation.shard import parse_shard
    from edgefusion.evaluation.table import markdown_table
    from edgefusion.executors.spec import executor_from_args

    try:
        executor = executor_from_args(args)
        shard = parse_shard(args.shard)
        metrics = MetricOptions(clip=args.clip_score, fid=args.fid, coco=args.protocol == "coco",
                                clip_model=args.clip_model, fid_inception=args.fid_inception,
                                fid_ref_stats=args.fid_ref_stats)
        result = evaluate(args.exports, load_prompt_set(args.prompts, args.seed), args.out, shard=shard,
                          seed=args.seed, steps=args.steps, guidance_scale=args.guidance_scale, metrics=metrics,
                          float_onnx=not args.no_float_onnx, low_memory=args.low_memory, grid_rows=args.grid_rows,
                          overwrite=args.overwrite, progress=not (args.no_progress or args.json), executor=executor)
    except EdgeFusionError as err:
        print(f"evaluate: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print("evaluate: interrupted; nothing was written", file=sys.stderr)
        return exit_status(err)
    if args.json:
        print(json.dumps({"out": args.out, "shard": str(shard), "summary": result.to_dict()["summary"]}, indent=1))
    else:
        print(markdown_table(result))
        print(f"{args.out}/report.html")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
