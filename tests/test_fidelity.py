"""Fidelity (issue 12): the range methods do what they claim, integer text encoders keep their fidelity, the loud
check fires on a broken export and not on a faithful one, and bad calibration choices are one line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgefusion.errors import EdgeFusionError
from edgefusion.metrics import mean_sqnr_db
from edgefusion.quant.policy import load_policy
from edgefusion.quant.quantize_graph import quantize_graph
from edgefusion.runtime.session import open_session, run_session


def _heldout_sqnr(float_path, qpath, samples) -> float:
    fs, qs = open_session(float_path), open_session(qpath)
    return mean_sqnr_db([run_session(fs, s.inputs)[0] for s in samples],
                        [run_session(qs, s.inputs)[0] for s in samples])


def _quantize(float_graphs, calibration, tmp_path, comp, policy, method):
    cal, ver = calibration
    qg = quantize_graph(float_graphs[comp], tmp_path / f"{comp}-{policy}-{method}.onnx", comp, load_policy(policy),
                        [s.inputs for s in cal.samples[comp]], method=method,
                        groups=[s.prompt_index for s in cal.samples[comp]])
    return qg, _heldout_sqnr(float_graphs[comp], qg.path, ver.samples[comp])


@pytest.fixture(scope="module")
def embedded_set(tmp_path_factory):
    """The embedded model's own sampler on 3 calibration and 2 held-out prompts (6 steps), and its float graphs."""
    from edgefusion.calibration.capture import capture_calibration
    from edgefusion.calibration.prompts import read_prompts, split_prompts
    from edgefusion.models.torch_to_onnx import export_component
    from edgefusion.models.source import load_pipeline, resolve_model_source

    src = resolve_model_source("embedded")
    pipe = load_pipeline(src, quiet=True)
    s = src.sampler
    cal_p, ver_p = split_prompts(read_prompts(src.prompts_file), 3, 2)
    cal = capture_calibration(pipe, cal_p, 6, s.guidance_scale, s.height, s.width, progress=False)
    ver = capture_calibration(pipe, ver_p, 6, s.guidance_scale, s.height, s.width, seed=10000, progress=False)
    root = tmp_path_factory.mktemp("embedded-float")
    graphs = {c: export_component(pipe, c, cal.samples[c][0].inputs, root / c / "model.onnx")
              for c in ("text_encoder", "unet")}
    return graphs, (cal, ver)


def test_crossval_widening_beats_minmax_on_held_out_prompts(embedded_set, tmp_path):
    """The claim of the default method: 16-bit ranges widened by what cross-validation over calibration prompts
    picks keep held-out inputs from clipping. Measured at W8A16 on 320 held-out samples: 20.0 -> 42.8 dB."""
    graphs, sets = embedded_set
    _, minmax = _quantize(graphs, sets, tmp_path, "unet", "w8a16", "minmax")
    qg, crossval = _quantize(graphs, sets, tmp_path, "unet", "w8a16", "crossval")
    assert qg.range_rule["method"] == "crossval" and qg.range_rule["alpha"]["16"] > 1.0
    assert crossval >= minmax + 3.0, (minmax, crossval)


def test_every_range_method_runs_and_mse_does_not_lose_to_minmax(tiny_float_graphs, tiny_calibration, tmp_path):
    """Every registered method writes a graph that runs; `mse` picks the clipping factors that lower the
    calibration set's quantization error, so on held-out samples it stays within 0.5 dB of min/max or better."""
    from edgefusion.quant.range_methods import METHODS

    results = {m: _quantize(tiny_float_graphs, tiny_calibration, tmp_path, "unet", "w8a8", m) for m in METHODS}
    for m, (qg, sqnr) in results.items():
        assert qg.range_rule["method"] == m and np.isfinite(sqnr) and sqnr > 15.0, (m, sqnr)
    assert results["mse"][1] >= results["minmax"][1] - 0.5
    # crossval's grid includes min/max itself: its held-out figure is min/max's or the widening it found better
    assert results["crossval"][1] >= results["minmax"][1] - 0.5


def test_crossval_search_fits_its_compute_budget_and_holds_out_every_fold(tiny_float_graphs, tiny_calibration,
                                                                          monkeypatch, tmp_path):
    """A real-size UNet must not run the search on every sample (sd-v1.5: 192 probe runs of ~50 s): the sample
    count follows the probe's multiply-accumulates, and a cut still holds out every fold of prompts."""
    from edgefusion.quant import range_methods as rm

    unet = tiny_float_graphs["unet"]
    assert rm.search_sample_limit(unet, 6) == rm.CROSSVAL_SAMPLES  # tiny: far inside the budget
    assert rm.search_sample_limit(unet, 6, budget=1.0) == 1
    cal, _ = tiny_calibration
    groups = [s.prompt_index for s in cal.samples["unet"]]
    n_folds = min(rm.CROSSVAL_FOLDS, len(set(groups)))
    assert n_folds >= 2 and len(groups) > n_folds
    monkeypatch.setattr(rm, "CROSSVAL_PROBE_MACS", 1.0)
    qg = quantize_graph(unet, tmp_path / "unet.onnx", "unet", load_policy("w8a16"), [s.inputs for s in
                        cal.samples["unet"]], method="crossval", groups=groups)
    measured = qg.range_rule["measured"]
    assert measured["crossval_samples"] == n_folds, measured  # the evenly spaced sample plus each missed fold
    assert qg.range_rule["alpha"]["16"] >= 1.0 and all(np.isfinite(v) for v in measured["crossval_sqnr_db"].values())


def test_budget_cut_search_samples_cover_every_fold_at_different_steps():
    """Cut to one sample, the search still holds out each fold once, at staggered positions (not all at step 0)."""
    from types import SimpleNamespace

    from edgefusion.quant.range_methods import prompt_folds, spread_subset

    groups = np.repeat(np.arange(8), 4)  # 8 prompts x (2 steps x 2 branches), as the sd-v1.5 export captures them
    parts = prompt_folds(groups, 4)
    use = spread_subset(SimpleNamespace(groups=groups), 1, parts)
    assert [int(np.isin(p, use).sum()) for p in parts] == [1, 1, 1, 1], use
    assert len({int(i) % 4 for i in use}) > 1, use  # positions within a prompt (step, branch) differ
    assert spread_subset(SimpleNamespace(groups=groups), 96, parts).tolist() == list(range(32))


def _text_encoder_ranges(qpath) -> list[float]:
    model = onnx.load(str(qpath))
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear":
            scale = float(numpy_helper.to_array(inits[n.input[1]]))
            bits = 8 if inits[n.input[2]].data_type == onnx.TensorProto.UINT8 else 16
            out.append(scale * (2 ** bits - 1))
    return out


@pytest.mark.parametrize("policy", ["w8a8", "w8a16"])
def test_integer_text_encoder_is_not_ruled_by_the_causal_mask(tiny_float_graphs, tiny_calibration, tmp_path,
                                                             policy):
    """The mask's -3.4e38 no longer sets a quantized range (it is merged into the softmax layer), so the integer
    text encoder keeps its fidelity: before, ~17 dB on tiny (now 27.8 dB at w8a8, 37.2 dB at w8a16 with its weights
    rounded to nearest, 40.9 dB with GPTQ, the default). Tiny's random int8 weights rounded to nearest alone cost
    37.8 dB (a Gaussian weight row has outliers), which bounds what any activation range can reach here. After the
    prompt-split fix of 2026-11-30 this test reads 27.2 dB (w8a8) and 37.3 dB (w8a16)."""
    qg, sqnr = _quantize(tiny_float_graphs, tiny_calibration, tmp_path, "text_encoder", policy, "minmax")
    assert max(_text_encoder_ranges(qg.path)) < 1e3
    assert sqnr >= {"w8a8": 25.0, "w8a16": 33.0}[policy], sqnr


def test_embedded_text_encoder_w8a16_reaches_40_db(embedded_set, tmp_path):
    """The issue's target on the trained model: W8A16 >= 40 dB (measured 48.2 dB since the project session keeps
    onnxruntime's MatMulNBits at fp32 compute, 45.1-45.7 dB before, 52.1 dB with GPTQ weight rounding; W8A8 reaches
    33.2-33.6, short of 40: see the README; after the prompt-split fix of 2026-11-30 this test's prompts read 52.1 dB
    at W8A16 and 32.5 dB at W8A8)."""
    graphs, sets = embedded_set
    _, sqnr = _quantize(graphs, sets, tmp_path, "text_encoder", "w8a16", None)
    assert sqnr >= 40.0, sqnr


def test_fidelity_warnings_on_the_analysers_readings():
    from edgefusion.embedded.shapes import Attributes, render
    from edgefusion.export.fidelity_check import IMAGE_PSNR_FLOOR_DB, fidelity_warnings

    a = Attributes("cross", "orange", "small", "center", "blue")
    b = Attributes("circle", "yellow", "small", "center", "blue")
    ia, ib = render(a), render(b)
    assert fidelity_warnings(a.caption(), ia, ia, 60.0) == []
    w = fidelity_warnings(a.caption(), ia, ib, 60.0)
    assert len(w) == 1 and "shape cross -> circle" in w[0] and "colour orange -> yellow" in w[0]
    low = fidelity_warnings("a photo of a cat", ia, ia, IMAGE_PSNR_FLOOR_DB - 0.01)
    assert len(low) == 1 and "PSNR" in low[0]
    assert fidelity_warnings("a photo of a cat", ia, ib, float("nan"))  # NaN is below any floor


def test_loud_check_fails_a_broken_export_under_strict_and_passes_fp16(tmp_path):
    """On the trained embedded model, 8-bit everything (the timestep embedding included) draws something else:
    an error under --strict with nothing written; an fp16 export of `tiny` passes --strict without a warning. (Random
    `tiny` is too forgiving to break this way: 29.6 dB image PSNR at W8A8 everywhere.)"""
    from edgefusion.export.run_export import export

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\nrules:\n  _default: W8A8\n")
    fast = dict(calib_prompts=1, calib_steps=2, verify_prompts=1, progress=False, tiling=False,
                calibration_method="minmax")
    with pytest.raises(EdgeFusionError, match="check image") as err:
        export(model="embedded", mpq_policy=str(broken), out=tmp_path / "b", strict=True, **fast)
    assert "--mpq-policy auto --target-sqnr" in str(err.value.fix), err.value.fix  # the error names a fix
    assert not (tmp_path / "b").exists()
    m = export(model="tiny", mpq_policy="fp16", out=tmp_path / "f", strict=True, **fast)
    assert m.warnings == [] and m.end_to_end["quantized_vs_torch_psnr_db"] > 40


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "edgefusion", "export", "--model", "tiny", *args],
                          capture_output=True, text=True, timeout=120)


def test_unknown_calibration_method_is_one_line(tmp_path):
    res = _cli("--calibration-method", "percentile", "--out", str(tmp_path / "x"))
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "percentile" in res.stderr and "crossval" in res.stderr and not (tmp_path / "x").exists()


def test_crossval_with_one_prompt_says_how_many_it_needs(tmp_path):
    res = _cli("--calibration-method", "crossval", "--calib-prompts", "1", "--out", str(tmp_path / "x"))
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "at least 2 prompts" in res.stderr and "--calib-prompts 2" in res.stderr
