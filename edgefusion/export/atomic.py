"""Write an output folder all-or-nothing: build it under a sibling staging name, rename into place at the end.

The staging folder ``.NAME.partial-PID`` holds a lock file locked by the running process for its whole life. A
process killed outright (SIGKILL, power loss) cannot clean up, so the next run for the same output removes every
staging folder whose lock is free (its owner is gone), and puts back an old folder a killed ``--overwrite`` had
moved aside (``.NAME.old-PID``) but not yet replaced.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from edgefusion.errors import EdgeFusionError
from edgefusion.paths import check_writable_dir

LOCK_NAME = ".edgefusion-lock"

try:
    import fcntl
except ImportError:  # not POSIX: ownership falls back to the process id in the folder name
    fcntl = None


def check_output_dir(out: Path, overwrite: bool, marker: str = "manifest.json",
                     what: str = "edgefusion export") -> None:
    """Refuse an output that cannot or must not be written (unless ``overwrite``, and then only a folder holding
    ``marker``), before any work."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EdgeFusionError(f"output path '{out}' is a file, not a folder (--overwrite replaces only an earlier "
                              f"{what} folder)", "pass a folder path with --out")
    if out.exists() and not overwrite:
        raise EdgeFusionError(f"output folder '{out}' already exists", "pass --overwrite to replace it, or --out DIR")
    if out.exists() and overwrite and any(out.iterdir()) and not (out / marker).is_file():
        raise EdgeFusionError(f"'{out}' is not an {what} (no {marker}), so --overwrite will not "
                              "replace it", "pass an empty or new folder with --out")
    check_writable_dir(out.parent, output=out)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _owner_gone(folder: Path) -> bool:
    """Whether the process that made this staging/trash folder has ended (its lock is free, or its pid is gone)."""
    lock = folder / LOCK_NAME
    if fcntl is not None and lock.is_file():
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
    suffix = folder.name.rsplit("-", 1)[-1]
    return suffix.isdigit() and int(suffix) != os.getpid() and not _pid_alive(int(suffix))


def remove_stale(out: Path) -> list[Path]:
    """Clean up after killed runs for ``out``: delete their staging folders, restore or delete their trash."""
    out = Path(out)
    if not out.parent.is_dir():
        return []
    handled = []
    for folder in sorted(out.parent.glob(f".{out.name}.partial-*")) + sorted(out.parent.glob(f".{out.name}.old-*")):
        if not folder.is_dir() or not _owner_gone(folder):
            continue
        if ".old-" in folder.name and not out.exists():
            os.replace(folder, out)  # killed between moving the old folder aside and renaming the new one in
        else:
            shutil.rmtree(folder, ignore_errors=True)
        handled.append(folder)
    return handled


def _lock(staging: Path) -> int | None:
    if fcntl is None:
        return None
    fd = os.open(staging / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


@contextmanager
def atomic_dir(out: Path, overwrite: bool = False, marker: str = "manifest.json", what: str = "edgefusion export"):
    """Yield a staging folder; on success it replaces ``out``, on any error it is deleted and ``out`` is untouched.

    ``--overwrite`` replaces only a folder that holds ``marker`` (the file every output of this kind has). Staging
    folders left by killed runs for the same ``out`` are removed first.
    """
    out = Path(out).resolve()
    remove_stale(out)
    check_output_dir(out, overwrite, marker, what)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    fd = _lock(staging)
    try:
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        (staging / LOCK_NAME).unlink(missing_ok=True)  # still held through fd until the rename is done
        trash = out.with_name(f".{out.name}.old-{os.getpid()}")
        if out.exists():
            os.replace(out, trash)
        os.replace(staging, out)
        shutil.rmtree(trash, ignore_errors=True)
    finally:
        if fd is not None:
            os.close(fd)
