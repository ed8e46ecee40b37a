"""A real `edgefusion export` (tiny preset) signalled while its torch stage runs: nothing is left behind, the
spawned child ends with its parent, and the next run removes what a SIGKILL could not."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from edgefusion.export.atomic import atomic_dir

CMD = [sys.executable, "-m", "edgefusion", "export", "--model", "tiny", "--calibration-method", "minmax",
       "--calib-prompts", "1", "--calib-steps", "1",
       "--verify-prompts", "1", "--no-progress"]


def _start_and_wait_for_the_child(tmp_path):
    """Start an export; return (process, its spawned stage child, output path, private TMPDIR) once the child is
    working inside the staging folder."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "out"
    proc = subprocess.Popen(CMD + ["--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmpdir)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        stage_child = [c for c in psutil.Process(proc.pid).children()
                       if "spawn_main" in " ".join(c.cmdline())]
        staging = list(tmp_path.glob(".out.partial-*"))
        if stage_child and staging and (staging[0] / ".work").is_dir():
            return proc, stage_child[0], out, tmpdir
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the export never started its torch stage")


def _leftovers(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name not in ("tmp",))


def test_sigterm_leaves_nothing_and_ends_the_child(tmp_path):
    proc, child, out, tmpdir = _start_and_wait_for_the_child(tmp_path)
    time.sleep(1.0)  # let the child get into its work (loading the model)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err, err
    gone, alive = psutil.wait_procs([child], timeout=15)
    assert not alive, "the torch-stage child outlived the interrupted export"
    assert _leftovers(tmp_path) == []  # no output, no staging folder
    assert list(tmpdir.iterdir()) == []  # no temporary folder outside the staging folder


def test_sigkill_of_the_parent_ends_the_child_and_the_next_run_cleans_up(tmp_path):
    proc, child, out, tmpdir = _start_and_wait_for_the_child(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    gone, alive = psutil.wait_procs([child], timeout=15)
    assert not alive, "the torch-stage child outlived its killed parent"
    staging = _leftovers(tmp_path)
    assert len(staging) == 1 and staging[0].startswith(".out.partial-")  # a SIGKILL cannot be cleaned up after
    assert list(tmpdir.iterdir()) == []  # its temporary files were inside the staging folder
    with atomic_dir(out) as stage:  # the next run for the same output (as `export` enters it)
        (stage / "manifest.json").write_text("{}")
    assert _leftovers(tmp_path) == ["out"]


def test_sighup_is_handled_like_ctrl_c():
    from edgefusion.interrupt import Interrupted, exit_status, install_signal_handlers

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        install_signal_handlers()
        with pytest.raises(KeyboardInterrupt) as err:
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(1)
        assert isinstance(err.value, Interrupted) and exit_status(err.value) == 128 + signal.SIGHUP
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
