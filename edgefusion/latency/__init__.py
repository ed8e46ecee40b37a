"""Emulated NPU latency: device profiles, the hardware cost model (engines, SRAM residency, DMA, hand-offs, host
fallback), reports and pluggable vendor backends. Never imports :mod:`edgefusion.tiling` (see
:mod:`edgefusion.deploy`)."""
