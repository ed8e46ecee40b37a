"""Qualcomm QNN HTP backend (``pip install edgefusion[qnn]``: onnxruntime's QNN execution provider as a plug-in).

It compiles exported graphs for a Snapdragon NPU with the HTP backend library, which on an x86 host prepares the
graph exactly as for the phone and runs it on an emulator of the HTP. CPU fallback is disabled, so a graph either
runs wholly on the HTP or is reported with the op types that keep it off. The compiled graph is saved as an
onnxruntime EP-context model plus the QNN context binary (what an Android app loads), reloaded, and run on the
verification inputs. No latency comes out of it: the emulator's per-node cycle counts vary several-fold between
identical runs on an x86 host and are not a measure of the phone's speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections import Counter
from pathlib import Path

from edgefusion.errors import EdgeFusionError
from edgefusion.latency.backends import LatencyBackend

EP_NAME = "QNNExecutionProvider"
# QNN's SoC table: the device profile name -> QNN target [public] (QNN SDK SoC list: SM8650 = 57, Hexagon v75)
QNN_TARGETS = {"snapdragon8gen3": {"soc_model": "57", "htp_arch": "75"}}
NOT_LATENCY = ("the QNN backend compiles and verifies graphs on the x86 HTP emulator but measures no latency "
               "(the emulator's cycle counts vary several-fold between identical runs and are not the phone's speed)")


def provider_options(device: str) -> dict[str, str]:
    """QNN EP options for ``device`` (the ones that compile every exported graph; see the README's QNN section)."""
    import onnxruntime_qnn

    target = QNN_TARGETS.get(device)
    if target is None:
        raise EdgeFusionError(f"no QNN target is known for device '{device}'",
                              f"use one of {', '.join(QNN_TARGETS)} or --backend emulated")
    # without soc_model, graphs with float norms fail to finalize (QNN_COMMON_ERROR_MEM_ALLOC); fp16 precision lets
    # the HTP run the policy's float layers; graph I/O stays float (quantized inside the graph, as exported)
    return {"backend_path": onnxruntime_qnn.get_qnn_htp_path(), **target, "enable_htp_fp16_precision": "1",
            "offload_graph_io_quantization": "0"}


def qnn_versions() -> dict[str, str]:
    """onnxruntime-qnn and the QNN SDK it bundles."""
    from importlib.metadata import version

    import onnxruntime_qnn

    info = {"onnxruntime_qnn": version("onnxruntime-qnn")}
    qnn = getattr(getattr(onnxruntime_qnn, "build_and_package_info", None), "qnn_version", None)
    if qnn:
        info["qnn_sdk"] = str(qnn)
    return info


_REGISTERED = False


def _ep_devices():
    """The QNN EP's devices (registers the plug-in library once per process)."""
    global _REGISTERED
    import onnxruntime as ort
    import onnxruntime_qnn

    if not _REGISTERED:
        ort.register_execution_provider_library(EP_NAME, onnxruntime_qnn.get_library_path())
        _REGISTERED = True
    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    if not devices:
        raise EdgeFusionError("onnxruntime found no QNN device after loading onnxruntime-qnn",
                              "reinstall with pip install 'edgefusion[qnn]'")
    return devices[:1]


def htp_session(path: str | Path, device: str, fallback: bool = False, context: Path | None = None,
                json_dir: Path | None = None):
    """An onnxruntime session on the (emulated) HTP; ``context`` writes the EP-context model and binary there."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    if not fallback:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    if context is not None:
        so.add_session_config_entry("ep.context_enable", "1")
        so.add_session_config_entry("ep.context_file_path", str(context))
        so.add_session_config_entry("ep.context_embed_mode", "0")  # the binary beside the model: <name>_qnn.bin
    opts = provider_options(device)
    if json_dir is not None:
        opts |= {"dump_json_qnn_graph": "1", "json_qnn_graph_dir": str(json_dir)}
    so.add_provider_for_devices(_ep_devices(), opts)
    return ort.InferenceSession(str(path), sess_options=so)


def _first_line(err: Exception) -> str:
    text = str(err).strip().replace("\n", " ")
    return text[:400]


QNN_FLOAT_TYPES = {0x0216, 0x0232}  # QNN_DATATYPE_FLOAT_16, QNN_DATATYPE_FLOAT_32
CONVERSION_OPS = {"Quantize", "Dequantize", "Cast", "Convert"}


def _qnn_op_counts(json_dir: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Op types of the QNN graph(s) the EP built (its JSON dump), e.g. how many Quantize/Dequantize/Cast remain;
    and the compute ops among them with a float output (float islands in a quantized graph)."""
    counts: Counter = Counter()
    floats: Counter = Counter()
    for f in json_dir.glob("*.json"):
        if f.name.endswith("_tensor_log.json"):
            continue
        graph = json.loads(f.read_text()).get("graph", {})
        tensors = graph.get("tensors", {})
        for v in graph.get("nodes", {}).values():
            op = v.get("type", "?")
            counts[op] += 1
            outs = v.get("output_names") or [""]
            if op not in CONVERSION_OPS and tensors.get(outs[0], {}).get("data_type") in QNN_FLOAT_TYPES:
                floats[op] += 1

    def ordered(c: Counter) -> dict[str, int]:
        return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))
    return ordered(counts), ordered(floats)


def compile_for_htp(path: Path, device: str, context: Path, work: Path) -> dict:
    """Compile one graph for the HTP with CPU fallback disabled; write ``context`` (+ its ``_qnn.bin``).

    Returns ``compiled``, ``cpu_nodes`` (0 when compiled), ``blocking_op_types`` (op type -> nodes the HTP rejected,
    found by compiling again with fallback allowed), ``context_files``, ``compile_s``, ``qnn_op_counts`` and
    ``qnn_float_ops`` (compute ops left with a float output: what runs in float on the HTP)."""
    import onnx

    context.parent.mkdir(parents=True, exist_ok=True)
    json_dir = work / f"{context.stem}_json"
    json_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        sess = htp_session(path, device, context=context, json_dir=json_dir)
        del sess
    except Exception as err:  # the EP reports unsupported nodes or finalize failures as generic errors
        rec = {"compiled": False, "error": _first_line(err), "compile_s": round(time.perf_counter() - t0, 2)}
        for f in context.parent.glob(context.stem + "*"):
            f.unlink()
        rec |= _blockers(path, device, work / f"{context.stem}_fallback.onnx")
        return rec
    ctx = onnx.load(str(context), load_external_data=False)
    others = Counter(n.op_type for n in ctx.graph.node if n.op_type != "EPContext")
    files = sorted(f.name for f in context.parent.glob(context.stem + "*"))
    ops, float_ops = _qnn_op_counts(json_dir)
    return {"compiled": True, "cpu_nodes": sum(others.values()), "blocking_op_types": dict(others),
            "context_files": files, "compile_s": round(time.perf_counter() - t0, 2),
            "qnn_op_counts": ops, "qnn_float_ops": float_ops}


def _blockers(path: Path, device: str, context: Path) -> dict:
    """Compile with CPU fallback allowed: the nodes left outside the EP-context nodes are what the HTP rejected."""
    import onnx

    try:
        htp_session(path, device, fallback=True, context=context)
    except Exception as err:
        return {"cpu_nodes": None, "blocking_op_types": {}, "fallback_error": _first_line(err)}
    ctx = onnx.load(str(context), load_external_data=False)
    others = Counter(n.op_type for n in ctx.graph.node if n.op_type != "EPContext")
    return {"cpu_nodes": sum(others.values()), "blocking_op_types": dict(sorted(others.items()))}


class QnnHtpBackend(LatencyBackend):
    """Qualcomm QNN HTP through onnxruntime-qnn: compiles and verifies, measures no latency."""

    name = "qnn"
    devices = tuple(QNN_TARGETS)
    measures_latency = False

    def unavailable_reason(self) -> str | None:
        """``None`` when onnxruntime-qnn and its HTP library are installed."""
        if importlib.util.find_spec("onnxruntime_qnn") is None:
            return "onnxruntime-qnn is not installed (pip install 'edgefusion[qnn]')"
        import onnxruntime as ort

        if not hasattr(ort, "register_execution_provider_library"):
            return f"onnxruntime {ort.__version__} cannot load execution-provider plug-ins (need >= 1.23)"
        import onnxruntime_qnn

        if not os.path.isfile(onnxruntime_qnn.get_qnn_htp_path()):
            return f"the QNN HTP library is missing ({onnxruntime_qnn.get_qnn_htp_path()})"
        return None

    def estimate(self, model, component, device, plan=None):
        """Refused: see :data:`NOT_LATENCY`."""
        raise EdgeFusionError(NOT_LATENCY, "pass --backend emulated for a latency estimate")
