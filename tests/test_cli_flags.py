"""Flags and verbs otherwise exercised only through the library, run once each from the command line on the tiny
preset: `profile --resolution`, `export --mpq-policy auto` (profiling inside the export) with `--keep-float`
and `--no-tiling`, and `eval/evaluate.py --low-memory` on that export (its float ONNX column needs --keep-float)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--model", "tiny", "--calib-prompts", "2", "--calib-steps", "2", "--verify-prompts", "1", "--no-progress"]


def _run(args, **kw):
    res = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=ROOT, **kw)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    _run([sys.executable, "-m", "edgefusion", "profile", *SMALL, "--resolution", "16", "--probes", "1",
          "--max-samples", "4", "--out", str(root / "profile")])
    res = _run([sys.executable, "-m", "edgefusion", "export", *SMALL, "--mpq-policy", "auto", "--keep-float",
                "--no-tiling", "--json", "--out", str(root / "export")])
    prompts = root / "prompts.txt"
    prompts.write_text("a red circle on a white background\n")
    _run([sys.executable, "eval/evaluate.py", str(root / "export"), "--prompts", str(prompts), "--steps", "2",
          "--low-memory", "--no-progress", "--json", "--out", str(root / "eval")])
    return root, json.loads(res.stdout)


def test_profile_at_a_lower_resolution(runs):
    from edgefusion.sensitivity.report import SensitivityReport

    root, _ = runs
    rep = SensitivityReport.load(root / "profile")
    assert rep.complete and rep.provenance.calibration["height"] == 16
    assert rep.provenance.native_resolution == [32, 32]
    assert rep.latency["height"] == 32  # costed at the model's own size
    assert (root / "profile" / "auto_policy.yaml").is_file() and not (root / "profile" / ".work").exists()


def test_export_auto_keep_float_no_tiling(runs):
    from edgefusion.quant.policy import load_policy

    root, m = runs
    assert m["policy"]["name"] == "auto" and load_policy(root / "export" / "policy.yaml").name == "auto"
    assert (root / "export" / "sensitivity" / "sensitivity.json").is_file()  # profiled inside the export
    for comp in ("text_encoder", "unet", "vae_decoder"):
        assert (root / "export" / "float" / comp / "model.onnx").is_file()  # --keep-float
    assert m["tiling"] == {"enabled": False, "sites": {}}  # --no-tiling
    assert m["peak_rss_after_stage_mb"]["auto_policy_stage"] > 0 and "auto_policy" in m["timings_s"]


def test_evaluate_low_memory_with_the_float_onnx_column(runs):
    root, _ = runs
    results = json.loads((root / "eval" / "results.json").read_text())
    kinds = [v["kind"] for v in results["spec"]["variants"]]
    assert kinds == ["torch_float", "onnx_float", "export"], kinds  # the float column exists thanks to --keep-float
    assert all(len(results["records"][v["key"]]) == 1 for v in results["spec"]["variants"])
    assert (root / "eval" / "report.html").is_file()
