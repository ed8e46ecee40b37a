"""Smoke checks of bench/quantize_vs_peers.py: options, the skipped-peer path, the float timestep path, the table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import quantize_vs_peers as qp  # noqa: E402


def test_options_default_to_the_issue_setting_and_reject_unknown_names():
    args = qp.parse_args([])
    assert (args.model, args.samples, args.steps, args.verify) == ("embedded", 64, 8, 2)
    assert qp._split(args.bits) == ["w8a8", "w8a16"] and qp._split(args.peers) == ["ours", "ort", "aimet", "oracle"]
    for bad in (["--bits", "w4a8"], ["--peers", "tensorrt"], ["--ort-methods", "mse"], ["--aimet-methods", "x"]):
        with pytest.raises(SystemExit):
            qp.parse_args(bad)


def test_missing_aimet_is_reported_not_faked(tmp_path):
    why = qp.aimet_available(str(tmp_path / "no-venv" / "bin" / "python"))
    assert why and "no interpreter" in why
    why = qp.aimet_available(sys.executable)  # the project's env must not have aimet (it pulls its own torch)
    assert why and "aimet_onnx" in why


def test_ours_methods_are_every_registered_range_method():
    from edgefusion.quant.range_methods import METHODS

    methods, how = qp.ours_methods()
    assert methods == list(METHODS) and {"minmax", "crossval"} <= set(methods) and how


def test_timestep_path_is_time_proj_and_its_feeders(tiny_float_graphs):
    import onnx

    path = qp.timestep_path(tiny_float_graphs["unet"])
    model = onnx.load(str(tiny_float_graphs["unet"]), load_external_data=False)
    ops = {n.name: n.op_type for n in model.graph.node}
    assert {"Sin", "Cos"} <= {ops[n] for n in path["nodes"]}
    assert not {"Conv", "Gemm", "MatMul"} & {ops[n] for n in path["nodes"]}
    assert "timestep" in path["tensors"] and "sample" not in path["tensors"]
    assert len(path["boundary"]) == 1  # the embedding entering time_embedding.linear_1: quantized by everyone


def test_table_shows_failures_and_ratios():
    info = {"model": "m", "height": 32, "width": 32, "cal_samples": 4, "verify_samples": 2}
    rows = [("ours", "minmax", "w8a8", {"sqnr_db": 30.0, "wall_s": 1.0, "peak_rss_mb": 100.0}),
            ("ort", "minmax", "w8a8", {"sqnr_db": 28.0, "wall_s": 2.0, "peak_rss_mb": 200.0}),
            ("aimet", "seq_mse", "w8a8", {"error": "killed (SIGKILL: out of memory)"})]
    text = qp.report(info, rows, ["AIMET skipped: x"])
    assert "failed: killed" in text and "+2.00 dB" in text and "ours-best / ort-lowest (minmax) = 100 / 200 MB = 0.50" in text
    assert "aimet-lowest" not in text and "note: AIMET skipped: x" in text


def test_oracle_rows_are_a_bound_not_a_peer():
    info = {"model": "m", "height": 32, "width": 32, "cal_samples": 4, "verify_samples": 2}
    rows = [("ours", "minmax", "w8a8", {"sqnr_db": 30.0, "wall_s": 1.0, "peak_rss_mb": 100.0}),
            ("ort", "minmax", "w8a8", {"sqnr_db": 29.0, "wall_s": 2.0, "peak_rss_mb": 200.0}),
            ("oracle", "minmax", "w8a8", {"sqnr_db": 31.0, "wall_s": 1.0, "peak_rss_mb": 100.0}),
            ("oracle", "mse", "w8a8", {"sqnr_db": 31.5, "wall_s": 1.0, "peak_rss_mb": 100.0})]
    text = qp.report(info, rows, [])
    assert "best peer = ort minmax 29.00 dB; difference +1.00 dB" in text  # the oracle is never the best peer
    assert "oracle bound (ranges fit on the held-out samples themselves, not a method) = mse 31.50 dB" in text
    assert "ours best -1.50 dB from it; best peer + 3 dB = 32.00 dB" in text
