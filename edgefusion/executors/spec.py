"""``--executor local|ray [--ray-address auto|HOST:PORT]``: the choice, checked before any heavy work.

Nothing here imports Ray: :func:`check_executor` does, lazily, and turns a missing installation or an address that
does not answer into one line naming the fix.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from edgefusion.errors import EdgeFusionError

LOCAL, RAY = "local", "ray"
KINDS = (LOCAL, RAY)
RAY_EXTRA = 'pip install "edgefusion[ray]"'
_ADDRESS = re.compile(r"^(?:auto|(?:ray://)?\[?[A-Za-z0-9_.:-]+?\]?:\d{1,5})$")


@dataclass(frozen=True)
class ExecutorSpec:
    """``local``: today's in-process loops. ``ray``: tasks on Ray; ``address`` ``None`` starts a local instance
    with ``workers`` CPUs (default: one per core), ``"auto"`` joins the cluster ``ray start`` runs on this
    machine, ``"HOST:PORT"`` joins a head node's cluster."""

    kind: str = LOCAL
    address: str | None = None
    workers: int | None = None

    @property
    def is_ray(self) -> bool:
        """True when units of work go to Ray."""
        return self.kind == RAY

    def __str__(self) -> str:
        if not self.is_ray:
            return LOCAL
        if self.address is None:
            return f"ray (local instance, {f'{self.workers} workers' if self.workers else 'one worker per core'})"
        return f"ray at {self.address}"

    def to_dict(self) -> dict:
        """Plain-dict form (crosses process boundaries as JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> ExecutorSpec:
        """Inverse of :meth:`to_dict`; ``None`` is the local executor."""
        return cls(**d) if d else cls()


def executor_spec(kind: str | None = None, address: str | None = None, workers: int | None = None) -> ExecutorSpec:
    """Validate the flags' values (one-line errors); does not contact anything."""
    kind = (kind or LOCAL).strip().lower()
    if kind not in KINDS:
        raise EdgeFusionError(f"unknown executor '{kind}'", "pass --executor local or --executor ray")
    if kind == LOCAL:
        if address is not None:
            raise EdgeFusionError("--ray-address only applies to --executor ray", "add --executor ray or drop it")
        if workers is not None:
            raise EdgeFusionError("a worker count only applies to --executor ray", "drop it or use --executor ray")
        return ExecutorSpec()
    if address is not None:
        address = address.strip()
        if not _ADDRESS.match(address):
            raise EdgeFusionError(f"--ray-address '{address}' is neither auto nor HOST:PORT",
                                  "pass --ray-address auto, or the head node's HOST:PORT (printed by `ray start "
                                  "--head`, default port 6379)")
        if workers is not None:
            raise EdgeFusionError("a worker count only applies to a local Ray instance (no --ray-address)",
                                  "size the cluster when starting it (`ray start --num-cpus N`)")
    if workers is not None and workers < 1:
        raise EdgeFusionError(f"worker count must be at least 1, got {workers}", "pass 1 or more")
    return ExecutorSpec(RAY, address, workers)


def add_executor_args(parser) -> None:
    """Add ``--executor`` and ``--ray-address`` to an argparse parser (same words everywhere)."""
    parser.add_argument("--executor", choices=KINDS, default=LOCAL,
                        help=f"where the units of work run: local (this machine, in process; default) or ray (tasks "
                             f"on a Ray cluster; needs {RAY_EXTRA})")
    parser.add_argument("--ray-address", default=None,
                        help="with --executor ray: auto (the cluster `ray start --head` runs on this machine) or "
                             "HOST:PORT of a head node; default: start a local Ray instance, one worker per core")


def executor_from_args(args) -> ExecutorSpec:
    """The spec from parsed :func:`add_executor_args` flags (validated)."""
    return executor_spec(getattr(args, "executor", None), getattr(args, "ray_address", None))


def check_executor(spec: ExecutorSpec | None) -> ExecutorSpec:
    """Fail early, in one line, when Ray is asked for but not installed or its address does not answer."""
    spec = spec or ExecutorSpec()
    if spec.is_ray:
        from edgefusion.executors.ray_session import check_address, require_ray

        require_ray()
        if spec.address is not None:
            check_address(spec.address)
    return spec
