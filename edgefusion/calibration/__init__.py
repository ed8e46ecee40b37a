"""Timestep-aware calibration: inputs of every component captured from the model's real sampler."""
