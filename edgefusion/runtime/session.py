"""One place that opens onnxruntime sessions the way the simulation needs them."""

from __future__ import annotations

import os
from pathlib import Path

# ORT would otherwise fold Cast(fp32->fp16)->Cast(fp16->fp32) away and hide the fp16 rounding we simulate, and
# (WeightBiasQuantization) silently quantize the float16 weights of an FP16 Conv/Gemm/MatMul whose input is a
# DequantizeLinear to int8, which the policy semantics do not ask for. (Integer layers' biases are int32 in the
# exported graph already, so onnxruntime fuses them into integer kernels with or without this optimizer.)
_DISABLED = ["CastChainElimination", "WeightBiasQuantization"]
# onnxruntime turns DQ(int8 weight) -> MatMul into MatMulNBits, whose default accuracy level (4) quantizes the
# *activation* to 8 bits inside the kernel: a W8A16 MatMul then computes at 8-bit precision (one 16-bit MatMul,
# 320x320: 48.45 dB vs the float result, 86.37 dB as the QDQ graph defines it). Level 1 computes in fp32, as defined.
MATMUL_NBITS_ACCURACY = ("session.qdq_matmulnbits_accuracy_level", "1")


def open_session(path: str | Path, threads: int = 0, optimized_model_path: str | Path | None = None,
                 ort_defaults: bool = False):
    """An ``InferenceSession`` on CPU for an ONNX file (external data is read by onnxruntime, not Python).

    ``threads`` (or the ``EDGEFUSION_ORT_THREADS`` environment variable) caps intra-op threads; 0 = all cores.
    ``optimized_model_path``: where onnxruntime writes the graph it actually runs (its fused kernels), if given.
    ``ort_defaults``: onnxruntime's default session options instead (what optimum and diffusers open), with every
    graph optimizer on, including the integer fusions the simulation disables.
    """
    import onnxruntime as ort

    if ort_defaults:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    env = os.environ.get("EDGEFUSION_ORT_THREADS", "0").strip() or "0"
    if not env.isdigit():
        from edgefusion.errors import EdgeFusionError

        raise EdgeFusionError(f"EDGEFUSION_ORT_THREADS='{env}' is not a whole number", "unset it or set e.g. 2")
    threads = threads or int(env)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    # The default order runs nodes by graph index; with the range reductions (or QDQ nodes) that keeps large
    # intermediates alive far longer: measured on bk-sdm-tiny's UNet, 11.4 GB peak vs 3.4 GB priority-based.
    opts.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    # Without the arena freed activations go back to the OS: bk-sdm-tiny UNet peak 3.25 GB -> 2.36 GB.
    opts.enable_cpu_mem_arena = False
    # Nor a memory pattern: after the first run onnxruntime allocates every activation of a run as one planned block,
    # larger than what the first run held at once (sd-v1.5's range-search probe UNet: 4.6 GB peak on the first run,
    # 5.4 GB on every later one). Samples run one by one, so each tensor is allocated when it is produced instead.
    opts.enable_mem_pattern = False
    opts.add_session_config_entry("optimization.disable_specified_optimizers", ";".join(_DISABLED))
    opts.add_session_config_entry(*MATMUL_NBITS_ACCURACY)
    if optimized_model_path:
        opts.optimized_model_filepath = str(optimized_model_path)
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def release_freed_memory() -> None:
    """Hand memory the process has freed back to the system (glibc's ``malloc_trim``; a no-op elsewhere).

    Freed tensors below glibc's mmap threshold (which grows to 32 MB once such a block is freed) stay in the heap:
    after the QDQ emission of sd-v1.5's UNet 968 MB of freed protobuf/numpy buffers remained resident (57 MB after
    the trim), and each released session leaves some too. Call it after a session or a large graph is dropped."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


_INT_TYPES = {"tensor(int32)": "int32", "tensor(int64)": "int64"}


def run_session(session, inputs: dict) -> "list":
    """Run with only the inputs the graph declares (extra keys ignored); integer inputs are given the integer type
    the graph declares (token ids are int32 in exported text encoders, int64 in the float graphs)."""
    feeds = {}
    for i in session.get_inputs():
        if i.name in inputs:
            value = inputs[i.name]
            want = _INT_TYPES.get(getattr(i, "type", None))
            if want and getattr(value, "dtype", None) is not None and value.dtype.kind in "iu" and value.dtype != want:
                value = value.astype(want)
            feeds[i.name] = value
    return session.run(None, feeds)
