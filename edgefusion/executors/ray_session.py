"""Connect to a Ray cluster, or start a local instance, for the length of one run.

A local instance (no address) gets one CPU per core (or the requested worker count), a small object store and no
dashboard, and is shut down when the run ends. ``auto`` and ``HOST:PORT`` join an existing cluster; the address is
checked first, in a few seconds: a plain TCP connection, then one request to the cluster's GCS from a short-lived
child process (``ray.init`` on an address that does not answer, or answers as something else, retries for a long
time and floods stderr). A cluster that wants Ray's token authentication (the default of ``ray start`` since Ray
2.5x) is joined in token mode when this machine has the token. A process that is already connected (``ray.init``
called by the caller) is used as it is.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from edgefusion.errors import EdgeFusionError
from edgefusion.executors.spec import RAY_EXTRA, ExecutorSpec

CONNECT_TIMEOUT_S = 3.0
PROBE_TIMEOUT_S = 8.0  # the GCS request, interpreter start and ``ray._raylet`` import included
OBJECT_STORE_MB = 300  # per node; EDGEFUSION_RAY_OBJECT_STORE_MB overrides (large objects spill to disk)
_HOW_CLUSTER = ("start one with `ray start --head` and pass the address it prints (HOST:PORT), or drop "
                "--ray-address to start a local Ray instance")


def require_ray():
    """The ``ray`` module, or a one-line error naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise EdgeFusionError("--executor ray needs Ray, which is not installed in this environment",
                              f"install the extra: {RAY_EXTRA} (or use --executor local)") from None
    return ray


def local_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _host_port(address: str) -> tuple[str, int]:
    bare = address.removeprefix("ray://")
    host, _, port = bare.rpartition(":")
    return host.strip("[]"), int(port)


def _resolve_auto() -> str | None:
    """What ``ray.init(address="auto")`` would join (RAY_ADDRESS, the last `ray start` on this machine, or a
    running cluster found on it); ``None`` when Ray's lookup is unavailable (then ``ray.init`` decides)."""
    try:
        from ray._private.services import get_ray_address_from_environment
    except ImportError:  # Ray moved it: skip the early check
        return None
    try:
        found = get_ray_address_from_environment("auto", None)
    except ConnectionError:
        raise EdgeFusionError("--ray-address auto found no running Ray cluster on this machine", _HOW_CLUSTER) from None
    return found if found and found != "auto" else None


# run in a child process: Ray's C++ client logs retries to stderr and caches the authentication mode per process
_PROBE = """
import sys
try:
    import ray.exceptions
    from ray._raylet import GcsClient
except ImportError:
    print("skip")
    raise SystemExit(0)
try:
    GcsClient(address=sys.argv[1])
except ray.exceptions.AuthenticationError:
    print("auth")
except Exception as err:
    print("no " + type(err).__name__ + ": " + ((str(err).strip().splitlines() or [""])[0])[:200])
else:
    print("ok")
"""


def _probe(address: str, env: dict) -> str:
    """``ok``, ``auth`` (a Ray cluster that refused our credentials), ``skip`` (cannot tell) or ``no <why>``."""
    try:
        res = subprocess.run([sys.executable, "-c", _PROBE, address], capture_output=True, text=True, env=env,
                             timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return f"no answer to a Ray request within {PROBE_TIMEOUT_S:g} s"
    out = res.stdout.strip().splitlines()
    return out[-1] if out else "skip"


def _token_available() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def _reload_ray_config() -> None:
    """Make an already imported Ray read ``RAY_AUTH_MODE`` again (its C++ config is read once per process)."""
    if "ray._raylet" not in sys.modules:
        return  # read when Ray is imported
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # another Ray version: ray.init reports what it finds
        pass


def check_address(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> str:
    """The address to pass to ``ray.init``, after checking a Ray cluster answers there (a TCP connection within
    ``timeout_s``, then one GCS request). May set ``RAY_AUTH_MODE=token`` for this process when the cluster asks
    for Ray's token authentication and this machine has the token."""
    resolved = _resolve_auto() if address == "auto" else address
    if resolved is None:
        return address
    what = f"--ray-address {address}" + (f" ({resolved})" if resolved != address else "")
    try:
        host, port = _host_port(resolved)
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except (OSError, ValueError) as err:
        raise EdgeFusionError(f"{what} does not answer ({type(err).__name__}: {err})", _HOW_CLUSTER) from None
    if resolved.startswith("ray://"):
        return resolved  # a Ray Client server, not a GCS: ray.init speaks to it, with its own timeout
    found = _probe(resolved, dict(os.environ))
    if found == "auth" and "RAY_AUTH_MODE" not in os.environ and _token_available():
        if _probe(resolved, {**os.environ, "RAY_AUTH_MODE": "token"}) == "ok":
            os.environ["RAY_AUTH_MODE"] = "token"  # read by ray.init in this process
            _reload_ray_config()
            found = "ok"
    if found == "auth":
        raise EdgeFusionError(f"the Ray cluster at {what.removeprefix('--ray-address ')} refused this machine's "
                              "credentials (Ray token authentication)",
                              "set RAY_AUTH_TOKEN to the cluster's token (`ray get-auth-token` on the head node) and "
                              "RAY_AUTH_MODE=token")
    if found.startswith("no "):
        raise EdgeFusionError(f"{what} does not answer as a Ray cluster ({found[3:]})", _HOW_CLUSTER)
    return resolved


# Ray's socket paths (<temp dir>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store) must fit in 107 bytes
_SESSION_TAIL = len("/session_2026-01-01_00-00-00_000000_1234567/sockets/plasma_store")


def local_temp_dir() -> tuple[str, bool]:
    """Where a local instance keeps its session (sockets, logs, spilled objects), and whether that folder is ours
    to remove afterwards: Ray's usual ``<temp>/ray`` unless that path is too long for a socket name (the stage
    processes point TMPDIR into the output's staging folder), then a new short folder under /tmp."""
    base = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    usual = os.path.join(base, "ray")
    if len(usual) + _SESSION_TAIL < 107:
        return usual, False
    return tempfile.mkdtemp(prefix="efray-", dir="/tmp"), True


def object_store_bytes() -> int:
    """Object store size of a local instance."""
    env = os.environ.get("EDGEFUSION_RAY_OBJECT_STORE_MB", "").strip()
    if env and not env.isdigit():
        raise EdgeFusionError(f"EDGEFUSION_RAY_OBJECT_STORE_MB='{env}' is not a whole number", "unset it or set e.g. 500")
    return int(env or OBJECT_STORE_MB) * 2 ** 20


@contextmanager
def ray_session(spec: ExecutorSpec):
    """Yield the connected ``ray`` module; shuts Ray down afterwards if this call connected it."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    temp, ours = None, False
    try:
        if spec.address is None:
            temp, ours = local_temp_dir()
            ray.init(address="local", num_cpus=spec.workers or local_cores(), object_store_memory=object_store_bytes(),
                     include_dashboard=False, _temp_dir=temp, **quiet)
        else:
            ray.init(address=check_address(spec.address), **quiet)
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        ray.shutdown()
        if ours:
            shutil.rmtree(temp, ignore_errors=True)
        raise EdgeFusionError(f"could not {'start' if spec.address is None else 'join'} Ray ({first})",
                              _HOW_CLUSTER if spec.address else "check `ray start --head` works on this machine, "
                              "or use --executor local") from None
    try:
        yield ray
    finally:
        ray.shutdown()
        if ours:
            shutil.rmtree(temp, ignore_errors=True)


def worker_count(ray) -> int:
    """CPUs of the connected cluster (one task per CPU runs at a time)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def cluster_is_local(ray) -> bool:
    """True when every live node of the cluster is this machine (so paths on it are paths on every worker)."""
    here = ray.util.get_node_ip_address()
    return all(n.get("NodeManagerAddress") == here for n in ray.nodes() if n.get("Alive"))


def assigned_cpus(ray) -> int:
    """CPUs Ray assigned to the running task (inside a worker), at least 1."""
    try:
        return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    except Exception:  # outside a task
        return 1
