"""Per-layer quantization sensitivity profiling and automatic mixed-precision policies."""
