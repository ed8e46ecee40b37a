"""``edgefusion`` entry point. Parsing imports nothing heavy, so ``edgefusion --help`` never loads torch."""

from __future__ import annotations

import argparse
import sys

from edgefusion import __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    from edgefusion.cli import export_cmd, generate_cmd, latency_cmd, profile_cmd

    parser = argparse.ArgumentParser(prog="edgefusion",
                                     description="Quantize, verify and simulate Stable Diffusion for phone NPUs.")
    parser.add_argument("--version", action="version", version=f"edgefusion {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    export_cmd.add_parser(sub)
    generate_cmd.add_parser(sub)
    latency_cmd.add_parser(sub)
    profile_cmd.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 on success, 1 on a reported error, 2 on bad usage)."""
    from edgefusion.errors import EdgeFusionError

    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except EdgeFusionError as err:
        print(f"edgefusion: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edgefusion: interrupted; nothing was written", file=sys.stderr)
        return 130
