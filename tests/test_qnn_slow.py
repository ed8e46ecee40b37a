"""Slow QNN HTP checks (``pytest -m slow``): the embedded model under each target policy, bk-sdm-tiny at 512x512."""

from __future__ import annotations

import json

import pytest

from edgefusion.latency.backends import discover_backends

WHY = discover_backends()["qnn"]().unavailable_reason()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(WHY is not None, reason=f"QNN backend unavailable: {WHY}")]


def _check(out):
    q = json.loads((out / "manifest.json").read_text())["qnn"]
    assert (q["graphs_compiled"], q["graphs_total"], q["cpu_nodes"]) == (q["graphs_total"], q["graphs_total"], 0), q
    for comp, rec in q["components"].items():
        assert rec["htp_outputs_finite"], comp
        for g in rec["graphs"]:
            assert all((out / f).is_file() for f in g["context_files"])
    return q


@pytest.mark.parametrize("policy", ["default", "w8a16", "fp16"])
def test_embedded_model_compiles_for_htp(tmp_path, policy):
    from edgefusion.export.run_export import export

    export(mpq_policy=policy, device="snapdragon8gen3", backend="qnn", out=tmp_path / policy, calib_prompts=2,
           verify_prompts=1, htp_samples=2, progress=False)
    _check(tmp_path / policy)


def test_bk_sdm_tiny_512_compiles_for_htp(tmp_path):
    """Real size: the UNet (323M parameters) within the HTP's ~2 GiB per-graph limit (partitioned if not)."""
    from edgefusion.export.run_export import export

    export(model="bk-sdm-tiny", mpq_policy="default", device="snapdragon8gen3", backend="qnn", out=tmp_path / "bk",
           calib_prompts=1, calib_steps=2, verify_prompts=1, htp_samples=1, progress=False)
    _check(tmp_path / "bk")
