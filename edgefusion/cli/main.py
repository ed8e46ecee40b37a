"""``edgefusion`` entry point. Parsing imports nothing heavy, so ``edgefusion --help`` never loads torch."""

from __future__ import annotations

import argparse
import math
import os
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


def check_numbers(args: argparse.Namespace) -> None:
    """Refuse (one line) any numeric flag that is NaN, infinite or negative: no flag of ours means anything then."""
    from edgefusion.errors import EdgeFusionError

    for dest, value in vars(args).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        flag = "--" + dest.replace("_", "-")
        if not math.isfinite(value):
            raise EdgeFusionError(f"{flag} must be a finite number, got {value}", f"pass a number with {flag}")
        if value < 0:
            raise EdgeFusionError(f"{flag} must not be negative, got {value:g}", f"pass 0 or more with {flag}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 on success, 1 on a reported error, 2 on bad usage, 128 + N when
    ended by signal N: Ctrl-C, SIGTERM, SIGHUP)."""
    from edgefusion.errors import EdgeFusionError
    from edgefusion.interrupt import exit_status, install_signal_handlers

    args = build_parser().parse_args(argv)
    install_signal_handlers()
    try:
        check_numbers(args)
        return int(args.run(args) or 0)
    except EdgeFusionError as err:
        print(f"edgefusion: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print(f"edgefusion: interrupted ({err.args[0] if err.args else 'SIGINT'}); nothing was written",
              file=sys.stderr)
        return exit_status(err)
    except Exception as err:  # a bug: one line and a log file with the traceback (EDGEFUSION_TRACEBACK=1 re-raises)
        if os.environ.get("EDGEFUSION_TRACEBACK"):
            raise
        import traceback

        from edgefusion.isolated import unexpected_error

        line = unexpected_error(f"{args.command} command", f"{type(err).__name__}: {err}", traceback.format_exc())
        print(f"edgefusion: error: {line}", file=sys.stderr)
        return 1
