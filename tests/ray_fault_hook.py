"""Fault injection for the Ray tests, installed in every worker process of the test's Ray instance (Ray's
``worker_process_setup_hook``): once the test creates ``<EDGEFUSION_TEST_FAULT_DIR>/arm``, the first worker that
starts generating an ONNX image afterwards writes ``fired`` (with its pid) and kills itself with SIGKILL, mid-task.
Nothing in edgefusion knows about this: it wraps the function the evaluation task calls."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def install() -> None:
    """Wrap ``edgefusion.evaluation.trace.onnx_traced_image`` in this worker."""
    import edgefusion.evaluation.trace as trace

    folder = Path(os.environ["EDGEFUSION_TEST_FAULT_DIR"])
    real = trace.onnx_traced_image

    def maybe_die(*args, **kwargs):
        if (folder / "arm").is_file():
            try:  # exactly one worker wins the marker, once
                fd = os.open(folder / "fired", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    trace.onnx_traced_image = maybe_die
