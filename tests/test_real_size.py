"""Real-size presets (random weights, 512x512). Slow: run with `python -m pytest -m slow`."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("preset", ["bk-sdm-tiny", "sd-v1.5"])
def test_full_export_with_32_unet_samples_stays_under_6gb(preset, tmp_path):
    """8 prompts x 2 steps x 2 CFG branches = 32 UNet calibration samples; peak RSS of the whole export < 6 GB."""
    out = tmp_path / preset
    res = subprocess.run([sys.executable, "-m", "edgefusion", "export", "--model", preset, "--out", str(out),
                          "--calib-prompts", "8", "--calib-steps", "2", "--verify-prompts", "1", "--json"],
                         capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, res.stderr[-2000:]
    m = json.loads(res.stdout)
    assert m["calibration"]["samples"]["unet"] == 32
    assert m["peak_rss_mb"] < 6 * 1024, m["peak_rss_mb"]
    for comp in m["components"].values():
        assert comp["float_vs_torch_sqnr_db"] > 40
    assert (out / "unet" / "model.onnx").is_file()
