"""Output locations checked before any work: a path the run could not write is a one-line error, not a traceback
after minutes of computation."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from edgefusion.errors import EdgeFusionError


def nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_dir(folder: str | Path, flag: str = "--out", output: str | Path | None = None) -> None:
    """Refuse (one line) when ``folder`` could not be created or written: an ancestor is a file, or the closest
    existing one refuses a new file (permissions, read-only file system). Probed by creating a file, because
    permission bits do not say everything (root, ACLs, read-only mounts). ``output``: the path the user gave, for
    the message, when ``folder`` is where it is created."""
    folder = Path(folder)
    shown = Path(output) if output is not None else folder
    base = nearest_existing(folder)
    if not base.is_dir():
        raise EdgeFusionError(f"cannot create '{shown}': '{base}' is a file, not a folder",
                              f"pass another path with {flag}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".edgefusion-write-test-", dir=base)
    except OSError as err:
        raise EdgeFusionError(f"cannot write to '{base}' ({err.strerror or type(err).__name__}), so '{shown}' "
                              "cannot be written", f"pass a writable location with {flag}") from None
    os.close(fd)
    os.unlink(probe)


def check_writable_file(path: str | Path, flag: str = "--out") -> None:
    """Refuse (one line) a file path that could not be written: a folder there, or an unwritable location."""
    path = Path(path)
    if path.is_dir():
        raise EdgeFusionError(f"output path '{path}' is a folder", f"pass a file path with {flag}")
    if path.exists() and not os.access(path, os.W_OK):
        raise EdgeFusionError(f"output file '{path}' is not writable", f"pass another path with {flag}")
    check_writable_dir(path.parent, flag, path)
