"""Merge the folders of `eval/evaluate.py --shard i/n` runs into one result and report.

    python eval/merge_shards.py SHARD_DIR [SHARD_DIR ...] --out DIR [--fid-ref-stats FILE] [--allow-partial]
        [--grid-rows 16] [--overwrite] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    """The script's arguments."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shards", nargs="+", help="folders written by eval/evaluate.py --shard i/n")
    ap.add_argument("--out", required=True)
    ap.add_argument("--fid-ref-stats", default=None, help="where the shards' FID reference .npz is on this machine")
    ap.add_argument("--allow-partial", action="store_true", help="merge even if some shards are missing")
    ap.add_argument("--grid-rows", type=int, default=16)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--json", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Merge; exit status 1 with one line on a reported error."""
    args = build_parser().parse_args(argv)
    from edgefusion.interrupt import exit_status, install_signal_handlers

    install_signal_handlers()  # SIGTERM/SIGHUP end it like Ctrl-C: the output's staging folder is removed
    from edgefusion.errors import EdgeFusionError
    from edgefusion.evaluation.merge import merge_shards
    from edgefusion.evaluation.table import markdown_table

    try:
        result = merge_shards(args.shards, args.out, fid_ref_stats=args.fid_ref_stats,
                              allow_partial=args.allow_partial, grid_rows=args.grid_rows, overwrite=args.overwrite)
    except EdgeFusionError as err:
        print(f"merge_shards: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print("merge_shards: interrupted; nothing was written", file=sys.stderr)
        return exit_status(err)
    if args.json:
        print(json.dumps({"out": args.out, "shards": result.shards, "summary": result.to_dict()["summary"]}, indent=1))
    else:
        print(markdown_table(result))
        print(f"{args.out}/report.html")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
