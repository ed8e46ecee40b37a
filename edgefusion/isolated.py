"""Run a heavy stage in a fresh (spawned) process, so its memory is returned to the system when it ends.

The export's torch stage (float model, calibration, ONNX export) and its onnxruntime stage (verification, range
collection, QDQ emission) never share a process: peak RSS is that of the larger stage, not of both plus what the
allocator keeps. Errors come back as the same one-line :class:`EdgeFusionError`; an unexpected one as one line
naming a log file that holds the child's traceback.

A child never outlives its parent: on Linux the kernel kills it when the parent dies (``PR_SET_PDEATHSIG``), and
everywhere a watchdog thread ends it when the pipe from its parent closes. Its temporary files (and the result
file) live in ``scratch``, normally inside the output's staging folder, so a killed run leaves nothing elsewhere.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from edgefusion import diagnostics
from edgefusion.errors import EdgeFusionError, plain_text

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """Make this (child) process end as soon as its parent does."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the watchdog below still works
            pass
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    parent = mp.parent_process()
    if parent is not None and parent.sentinel is not None:
        def watch() -> None:
            from multiprocessing.connection import wait

            wait([parent.sentinel])  # readable (EOF) once the parent's end of the pipe is closed: it is gone
            os._exit(1)

        threading.Thread(target=watch, name="edgefusion-parent-watchdog", daemon=True).start()


def _child(fn: Callable, args: tuple, kwargs: dict, result: str, parent_pid: int, strict: bool) -> None:
    _die_with_parent(parent_pid)
    scratch = str(Path(result).parent)
    tempfile.tempdir = scratch  # every temporary file of this process (and of its children) goes there
    os.environ["TMPDIR"] = scratch
    # The parent's stdout carries what the command prints (`--json`: the manifest alone); a stage writes nothing
    # there, but native libraries do (the QNN HTP library prints a "# LIBNATIVE: ..." line), so this process's
    # stdout, Python's and the file descriptor both, goes to stderr.
    sys.stdout.flush()
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with diagnostics.session(strict):
        try:
            value = fn(*args, **kwargs)
            out = {"ok": value}
        except EdgeFusionError as err:
            out = {"error": str(err), "user": True}
        except BaseException as err:  # report, the parent raises
            out = {"error": f"{type(err).__name__}: {err}", "user": False, "traceback": traceback.format_exc()}
        out["warnings"] = diagnostics.recorded()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    Path(result).write_text(json.dumps(out))


def log_dir() -> Path:
    """Where tracebacks of unexpected errors are written: ``$EDGEFUSION_LOG_DIR``, else ``<tmp>/edgefusion-logs``."""
    return Path(os.environ.get("EDGEFUSION_LOG_DIR") or Path(tempfile.gettempdir()) / "edgefusion-logs")


def write_crash_log(what: str, text: str) -> Path | None:
    """Save a traceback for a bug report; returns the file (None if nothing could be written)."""
    try:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        slug = "-".join("".join(c if c.isalnum() else " " for c in what).split())
        path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{os.getpid()}.log"
        path.write_text(text)
        return path
    except OSError:
        return None


def unexpected_error(what: str, error: str, trace: str) -> EdgeFusionError:
    """The one-line error for a bug: the exception's first line and the log file holding its traceback."""
    first = plain_text((error.strip().splitlines() or ["unknown error"])[0])[:300]
    log = write_crash_log(what, f"{error}\n\n{trace}")
    where = f"the traceback is in {log}" if log else "no log could be written"
    return EdgeFusionError(f"unexpected error in the {what} ({first})", f"{where}; please report it with that file")


def run_isolated(fn: Callable, *args, scratch: str | Path | None = None, **kwargs) -> tuple[object, float]:
    """Call ``fn(*args, **kwargs)`` (a module-level function with JSON-able result) in a spawned process.

    ``scratch``: an existing folder for the child's temporary files (default: the system's temporary folder).
    Warnings the child raised (:mod:`edgefusion.diagnostics`) join the caller's session; the child runs in the
    caller's strict mode. Returns ``(result, peak RSS of the child in MB)``.
    """
    ctx = mp.get_context("spawn")
    stage = f"{fn.__name__.strip('_').replace('_', ' ')} process"
    with tempfile.TemporaryDirectory(prefix="edgefusion-", dir=scratch) as tmp:
        result = Path(tmp) / "result.json"
        proc = ctx.Process(target=_child, args=(fn, args, kwargs, str(result), os.getpid(), diagnostics.strict()))
        proc.start()
        try:
            proc.join()
        except BaseException:  # interrupted: do not leave the child writing into a folder being removed
            proc.terminate()
            proc.join()
            raise
        if not result.is_file():
            hint = "it was killed, most likely out of memory" if proc.exitcode in (-9, 137) else "it crashed"
            raise EdgeFusionError(f"the {stage} ended with status {proc.exitcode} ({hint})",
                                  "free memory or use a smaller model/resolution, then retry")
        out = json.loads(result.read_text())
    diagnostics.adopt(out.get("warnings", []))
    if "error" in out:
        if out["user"]:
            raise EdgeFusionError(out["error"])
        if out["error"].startswith("KeyboardInterrupt"):
            raise KeyboardInterrupt
        raise unexpected_error(stage, out["error"], out.get("traceback", ""))
    return out["ok"], out["peak_rss_mb"]
