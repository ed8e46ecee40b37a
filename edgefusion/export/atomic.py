"""Write an output folder all-or-nothing: build it under a sibling staging name, rename into place at the end."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from edgefusion.errors import EdgeFusionError


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse an existing output (unless ``overwrite``) before any work starts."""
    if out.exists() and not overwrite:
        raise EdgeFusionError(f"output folder '{out}' already exists", "pass --overwrite to replace it, or --out DIR")
    if out.exists() and not out.is_dir():
        raise EdgeFusionError(f"output path '{out}' is a file", "pass a folder path with --out")
    if out.exists() and overwrite and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise EdgeFusionError(f"'{out}' is not an edgefusion export (no manifest.json), so --overwrite will not "
                              "replace it", "pass an empty or new folder with --out")


@contextmanager
def atomic_dir(out: Path, overwrite: bool = False):
    """Yield a staging folder; on success it replaces ``out``, on any error it is deleted and ``out`` is untouched."""
    out = Path(out).resolve()
    check_output_dir(out, overwrite)
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
