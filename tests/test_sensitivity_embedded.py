"""On the embedded trained model: the profiler's policy predictions match the QDQ graphs the exporter writes, and
the automatic policy is no worse than ``default`` at no higher latency.

On this reduced set (one held-out prompt) ``default`` loses little to the clipped input latent (31 dB), and with
latencies from the device latency model the budget of ``default`` leaves 0.36 ms above ``w8a8`` on this
launch-overhead-bound model, so ``auto`` may equal ``default`` here; that it *beats* it (by more than 3 dB) is tested
at the export's default calibration in ``test_sensitivity_slow.py``.

Reduced settings keep it quick (2 calibration prompts for the ranges, 1 held-out prompt x 20 steps x 2 branches
measured, 2 probes); each QDQ graph is built by the exporter's own ``quantize_graph`` from the same float graph,
calibration set, prompt groups and range method as the profile, and run by onnxruntime on the held-out samples, as
``edgefusion export`` verifies. (Built with min/max ranges, as this test did until 2026-11-30, the
outermost-level ``default`` measured 36.2 dB against the profile's 42.6: its 16-bit ranges are the ones
``crossval`` widens.) The bound is the issue's 1.5 dB (measured: simulation within 0.1 dB, first-order sum within
0.5 dB).
"""

import pytest

from edgefusion.calibration.capture import CalibrationSet
from edgefusion.metrics import mean_sqnr_db
from edgefusion.quant.policy import load_policy
from edgefusion.quant.quantize_graph import quantize_graph
from edgefusion.runtime.session import open_session, run_session

# real trained model: minutes on 2 cores, so it runs with the slow suite (`python -m pytest -m slow`)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded_profile(tmp_path_factory):
    from edgefusion.sensitivity.run_profile import profile

    out = tmp_path_factory.mktemp("profile") / "embedded"
    report = profile(model="embedded", out=out, calib_prompts=2, verify_prompts=1, probes=2, max_samples=40,
                     keep_work=True, progress=False)
    return out, report


def test_predictions_match_qdq_graphs_and_auto_beats_default(embedded_profile, tmp_path):
    out, report = embedded_profile
    work = out / ".work"
    cal = CalibrationSet.load(work / "cal")
    held = [CalibrationSet.load(work / "heldout").samples["unet"][i] for i in report.profiled_samples]
    float_unet = work / "unet" / "model.onnx"
    fs = open_session(float_unet)
    ref = [run_session(fs, s.inputs)[0] for s in held]
    method = report.provenance.calibration["method"]  # the profiler's ranges (crossval widens the 16-bit ones)
    auto = report.checks["auto_policy"]
    simulated = {**{k: v["simulated_db"] for k, v in report.checks["policies"].items()},
                 "auto": auto["simulated_db"]}
    measured, costs = {}, {}
    for name in ("default", "w8a8", "auto"):
        spec = load_policy(out / "auto_policy.yaml" if name == "auto" else name)
        # the profiler models weights rounded to nearest; the export's GPTQ rounding (16-bit layers) gains on top
        qg = quantize_graph(float_unet, tmp_path / f"{name}.onnx", "unet", spec,
                            [s.inputs for s in cal.samples["unet"]], method=method,
                            groups=[s.prompt_index for s in cal.samples["unet"]], weight_rounding="nearest")
        qs = open_session(qg.path)
        measured[name] = mean_sqnr_db(ref, [run_session(qs, s.inputs)[0] for s in held])
        pred = report.predict(report.resolve(spec))
        costs[name] = pred["cost"]
        assert abs(pred["sqnr_db"] - measured[name]) < 1.5, (name, pred["sqnr_db"], measured[name])
        assert abs(simulated[name] - measured[name]) < 1.5, (name, simulated[name], measured[name])
    assert auto["whole_model_cost"] <= auto["presets"]["default"]["whole_model_cost"] * (1 + 1e-9)
    assert costs["auto"] <= costs["default"] * 1.01  # the additive table, within its error on mixed policies
    assert measured["auto"] >= measured["default"] - 0.2, measured  # no worse (ORT vs ORT, same samples)
