"""Large read-only folders (export folders, float graphs, model folders, metric weights) as workers see them.

On one machine (every Ray node is this host) a folder is shared by its path: nothing is copied. Across machines
without a shared file system it goes through Ray's object store once (``ray.put`` of its files) and each node
unpacks it once into a cache folder named by its content digest; every task on that node reuses it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgefusion.errors import EdgeFusionError

CACHE_PREFIX = "edgefusion-ray-"
SHIP_ENV = "EDGEFUSION_RAY_SHIP"  # auto (default) | path | store: how folders reach the workers
_DONE = ".complete"


def ship_folders(ray) -> bool:
    """Ship folders through the object store? ``auto``: only when some Ray node is another machine; ``path``: never
    (every node mounts the same paths); ``store``: always."""
    from edgefusion.executors.ray_session import cluster_is_local

    mode = os.environ.get(SHIP_ENV, "auto").strip().lower() or "auto"
    if mode not in ("auto", "path", "store"):
        raise EdgeFusionError(f"{SHIP_ENV}='{mode}' is not auto, path or store", f"unset {SHIP_ENV} or set one of them")
    return mode == "store" or (mode == "auto" and not cluster_is_local(ray))


@dataclass
class FolderShare:
    """A folder (or one file, ``file`` set) the driver sees at ``path``; ``ref`` holds its files in the object
    store when it is shipped rather than shared by path."""

    path: str
    ref: object | None = None  # ObjectRef of {relative path: bytes}
    digest: str = ""
    file: str | None = None  # a single file inside the folder, for file shares


def _pack(root: Path, only: str | None = None) -> tuple[dict[str, bytes], str]:
    files, h = {}, hashlib.sha256()
    paths = [root / only] if only else sorted(p for p in root.rglob("*") if p.is_file())
    for p in paths:
        rel = p.relative_to(root).as_posix()
        data = p.read_bytes()
        files[rel] = data
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return files, h.hexdigest()[:20]


def share_folder(ray, path: str | Path, ship: bool) -> FolderShare:
    """Share ``path`` (a folder, or a file) with the workers: by path, or shipped through the object store."""
    path = Path(path).resolve()
    root, only = (path.parent, path.name) if path.is_file() else (path, None)
    if not ship:
        return FolderShare(str(root), file=only)
    files, digest = _pack(root, only)
    return FolderShare(str(root), ray.put(files), digest, only)


def local_path(share: FolderShare, cache_root: str | None = None) -> Path:
    """Inside a task: where the shared folder (or file) is on this node, unpacked once per node when shipped."""
    if share.ref is None:
        root = Path(share.path)
        if not root.exists():
            import socket

            raise EdgeFusionError(f"'{root}' is not visible on Ray node {socket.gethostname()}",
                                  "put it on a file system every node mounts at the same path, or run the driver "
                                  "on a machine of the cluster")
        return root / share.file if share.file else root
    import ray

    dest = Path(cache_root or tempfile.gettempdir()) / f"{CACHE_PREFIX}{share.digest}"
    if not (dest / _DONE).is_file():
        files = ray.get(share.ref)
        part = dest.with_name(f"{dest.name}.partial-{os.getpid()}")
        shutil.rmtree(part, ignore_errors=True)
        for rel, data in files.items():
            target = part / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        (part / _DONE).write_text(share.path)
        try:
            os.replace(part, dest)
        except OSError:  # another worker of this node unpacked it first
            shutil.rmtree(part, ignore_errors=True)
    return dest / share.file if share.file else dest


def pack_folder(path: str | Path) -> dict[str, bytes]:
    """Every file under ``path`` (relative path -> bytes): a folder a task made, to return to the driver."""
    return _pack(Path(path))[0]


def unpack_folder(files: dict[str, bytes], dest: str | Path) -> Path:
    """Write what :func:`pack_folder` returned under ``dest``."""
    dest = Path(dest)
    for rel, data in files.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dest
