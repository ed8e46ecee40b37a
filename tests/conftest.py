"""Shared fixtures: one tiny float UNet graph and one tiny end-to-end export per policy, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_pipe():
    from edgefusion.models.source import load_pipeline, resolve_model_source

    return load_pipeline(resolve_model_source("tiny"), quiet=True)


@pytest.fixture(scope="session")
def tiny_calibration(tiny_pipe):
    """4 calibration prompts x 4 steps (x2 CFG branches) and 2 held-out prompts."""
    from edgefusion.calibration.capture import capture_calibration
    from edgefusion.calibration.prompts import read_prompts, split_prompts

    cal_p, ver_p = split_prompts(read_prompts(), 4, 2)
    cal = capture_calibration(tiny_pipe, cal_p, 4, 7.5, 32, 32, progress=False)
    ver = capture_calibration(tiny_pipe, ver_p, 4, 7.5, 32, 32, seed=100, progress=False)
    return cal, ver


@pytest.fixture(scope="session")
def tiny_float_graphs(tiny_pipe, tiny_calibration, tmp_path_factory) -> dict[str, Path]:
    """Float ONNX graphs of the three tiny components."""
    from edgefusion.models.torch_to_onnx import export_component

    cal, _ = tiny_calibration
    root = tmp_path_factory.mktemp("float")
    return {c: export_component(tiny_pipe, c, cal.samples[c][0].inputs, root / c / "model.onnx")
            for c in ("text_encoder", "unet", "vae_decoder")}


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory) -> dict[str, Path]:
    """Full `export` runs of the tiny preset under `default` and `w8a8`."""
    from edgefusion.export.run_export import export

    root = tmp_path_factory.mktemp("exports")
    out = {}
    for policy in ("default", "w8a8"):
        export(model="tiny", mpq_policy=policy, out=root / policy, calib_prompts=4, calib_steps=4,
               verify_prompts=2, progress=False)
        out[policy] = root / policy
    return out


@pytest.fixture
def sweep_dies_after_one_chunk(monkeypatch) -> list[list[int]]:
    """The profiler's per-chunk work raises KeyboardInterrupt (a killed driver) from its second chunk on; returns
    the list of sample indices of the chunks it did profile."""
    from edgefusion.sensitivity import profiler

    real, calls = profiler.linear_noise, []

    def dies_after_one(sim_, chunk, probes, seed=0):
        if calls:
            raise KeyboardInterrupt
        calls.append(list(chunk.index))
        return real(sim_, chunk, probes, seed)

    monkeypatch.setattr(profiler, "linear_noise", dies_after_one)
    return calls
