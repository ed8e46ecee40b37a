"""Emulated NPU latency: device profiles, per-node cost model, reports, pluggable backends."""
