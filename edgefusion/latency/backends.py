"""Latency backends: the built-in emulated NPU model, and vendor SDKs plugged in through Python entry points.

A backend is a class registered under the entry-point group ``edgefusion.latency_backends``::

    [project.entry-points."edgefusion.latency_backends"]
    my-npu = "my_package.backend:MyBackend"

with a ``name``, ``unavailable_reason()`` (``None`` when it can run here, else why not) and
``estimate(graph, component, device) -> GraphCost`` for one ONNX graph. ``auto`` picks the first available
vendor backend that supports the device and falls back to the emulated model, saying why each was skipped.
"""

from __future__ import annotations

import importlib.util
import os
from importlib.metadata import entry_points

import onnx

from edgefusion.errors import EdgeFusionError
from edgefusion.latency.cost_model import GraphCost, estimate_graph
from edgefusion.latency.device import DeviceProfile
from edgefusion.graph.op_graph import build_op_graph

GROUP = "edgefusion.latency_backends"


class LatencyBackend:
    """Interface of a latency backend (subclass it, or provide the same attributes)."""

    name = "base"
    devices: tuple[str, ...] | None = None  # device profiles it can measure; None = any
    measures_latency = True  # False: a compile/verify backend (e.g. QNN on an emulator) that ``auto`` skips for latency

    def unavailable_reason(self) -> str | None:
        """``None`` when the backend can run on this machine, else a one-line reason."""
        return None

    def estimate(self, model: onnx.ModelProto, component: str, device: DeviceProfile, plan=None) -> GraphCost:
        """Latency of one call of one graph on ``device``."""
        raise NotImplementedError


class EmulatedBackend(LatencyBackend):
    """The built-in roofline model over the NPU op graph (see :mod:`edgefusion.latency.cost_model`)."""

    name = "emulated"

    def estimate(self, model, component, device, plan=None):
        """Cost the graph with the device profile's figures."""
        return estimate_graph(build_op_graph(model, component, plan), device)


class ExynosAIStudioBackend(LatencyBackend):
    """Samsung Exynos AI Studio / ENN SDK, used when its SDK is installed.

    Detection only: this project has no SDK to build against, so measuring through it is not implemented; when
    the SDK is found, estimating says so and how to use the emulated model instead.
    """

    name = "exynos-ai-studio"
    devices = ("exynos2400", "exynos2200")

    def unavailable_reason(self) -> str | None:
        """Found through ``EXYNOS_AI_LITECORE_ROOT`` or an importable ``exynos_ai_studio`` / ``enn`` module."""
        root = os.environ.get("EXYNOS_AI_LITECORE_ROOT")
        if root and os.path.isdir(root):
            return None
        for module in ("exynos_ai_studio", "enn"):
            if importlib.util.find_spec(module) is not None:
                return None
        return "Exynos AI Studio SDK not found (set EXYNOS_AI_LITECORE_ROOT or install its Python package)"

    def estimate(self, model, component, device, plan=None):
        """Not implemented: no SDK was available to develop against."""
        raise EdgeFusionError("the Exynos AI Studio SDK was found, but profiling through it is not implemented in "
                              "this version of edgefusion", "pass --backend emulated")


def discover_backends() -> dict[str, type]:
    """Every registered backend class by name (built-ins first, then entry points; later names do not override)."""
    found: dict[str, type] = {EmulatedBackend.name: EmulatedBackend, ExynosAIStudioBackend.name: ExynosAIStudioBackend}
    for ep in entry_points(group=GROUP):
        if ep.name in found:
            continue
        try:
            found[ep.name] = ep.load()
        except Exception as err:  # a broken plug-in must not break the built-in model
            found[ep.name] = _broken(ep.name, f"{type(err).__name__}: {err}")
    return found


def _broken(name: str, why: str) -> type:
    class Broken(LatencyBackend):
        def unavailable_reason(self):
            return f"plug-in failed to load ({why})"
    Broken.name = name
    return Broken


def select_backend(name: str, device: DeviceProfile) -> tuple[LatencyBackend, list[str]]:
    """The backend to use and notes on what was skipped; ``auto`` prefers an available vendor backend."""
    backends = discover_backends()
    if name != "auto":
        if name not in backends:
            raise EdgeFusionError(f"unknown latency backend '{name}'", f"use auto or one of {', '.join(backends)}")
        backend = backends[name]()
        why = backend.unavailable_reason()
        if why:
            raise EdgeFusionError(f"latency backend '{name}' cannot run here: {why}", "pass --backend emulated")
        return backend, []
    notes = []
    for bname, cls in backends.items():
        if bname == EmulatedBackend.name:
            continue
        backend = cls()
        if backend.devices is not None and device.name not in backend.devices:
            continue
        if not getattr(backend, "measures_latency", True):
            notes.append(f"backend '{bname}' skipped: it compiles and verifies, it measures no latency")
            continue
        why = backend.unavailable_reason()
        if why is None:
            return backend, notes + [f"latency measured with the '{bname}' backend"]
        notes.append(f"backend '{bname}' skipped: {why}")
    return EmulatedBackend(), notes
