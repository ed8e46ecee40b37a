"""Write an output folder all-or-nothing: build it under a sibling staging name, rename into place at the end."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from edgefusion.errors import EdgeFusionError


def check_output_dir(out: Path, overwrite: bool, marker: str = "manifest.json",
                     what: str = "edgefusion export") -> None:
    """Refuse an existing output (unless ``overwrite``, and then only a folder holding ``marker``) before any work."""
    if out.exists() and not overwrite:
        raise EdgeFusionError(f"output folder '{out}' already exists", "pass --overwrite to replace it, or --out DIR")
    if out.exists() and not out.is_dir():
        raise EdgeFusionError(f"output path '{out}' is a file", "pass a folder path with --out")
    if out.exists() and overwrite and any(out.iterdir()) and not (out / marker).is_file():
        raise EdgeFusionError(f"'{out}' is not an {what} (no {marker}), so --overwrite will not "
                              "replace it", "pass an empty or new folder with --out")


@contextmanager
def atomic_dir(out: Path, overwrite: bool = False, marker: str = "manifest.json", what: str = "edgefusion export"):
    """Yield a staging folder; on success it replaces ``out``, on any error it is deleted and ``out`` is untouched.

    ``--overwrite`` replaces only a folder that holds ``marker`` (the file every output of this kind has).
    """
    out = Path(out).resolve()
    check_output_dir(out, overwrite, marker, what)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    trash = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, trash)
    os.replace(staging, out)
    shutil.rmtree(trash, ignore_errors=True)
