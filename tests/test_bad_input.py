"""Every bad input gets a one-line error naming problem and fix, a non-zero exit, and no partial output."""

import subprocess
import sys

import pytest
import torch

from edgefusion.errors import EdgeFusionError
from edgefusion.export.run_export import export

# one calibration prompt: min/max ranges (crossval, the default, needs two prompts)
FAST = dict(calib_prompts=1, calib_steps=1, verify_prompts=1, progress=False, calibration_method="minmax")


def _expect(tmp_path, needle, **kwargs):
    out = tmp_path / "out"
    with pytest.raises(EdgeFusionError) as err:
        export(out=out, **{**FAST, **kwargs})
    msg = str(err.value)
    assert needle in msg, msg
    assert "\n" not in msg
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging left
    return msg


def test_missing_model_path(tmp_path):
    _expect(tmp_path, "neither a preset nor an existing path", model=str(tmp_path / "nope"))


def test_model_path_is_a_file(tmp_path):
    f = tmp_path / "weights.safetensors"
    f.write_bytes(b"x")
    _expect(tmp_path, "is a file", model=str(f))


def test_folder_without_model_index(tmp_path):
    (tmp_path / "m").mkdir()
    _expect(tmp_path, "no model_index.json", model=str(tmp_path / "m"))


def test_folder_without_unet(tmp_path, tiny_pipe):
    d = tmp_path / "m"
    tiny_pipe.save_pretrained(str(d))
    import shutil
    shutil.rmtree(d / "unet")
    _expect(tmp_path, "has no unet/", model=str(d))


def test_unknown_policy_and_device(tmp_path):
    _expect(tmp_path, "neither a preset nor an existing file", model="tiny", mpq_policy="w4a4")
    _expect(tmp_path, "unknown device", model="tiny", device="exynos9999")


def test_unknown_op_policy(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("rules:\n  op:FlashAttention: W8A16\n  _default: W8A8\n")
    _expect(tmp_path, "unknown op type", model="tiny", mpq_policy=str(p))


def test_empty_and_non_utf8_prompt_files(tmp_path):
    e = tmp_path / "empty.txt"
    e.write_text("\n  \n")
    _expect(tmp_path, "holds no prompts", model="tiny", prompts_file=str(e))
    b = tmp_path / "latin1.txt"
    b.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    _expect(tmp_path, "not UTF-8", model="tiny", prompts_file=str(b))


def test_nan_in_calibration_activations(tmp_path, tiny_pipe):
    import copy

    pipe = copy.deepcopy(tiny_pipe)
    with torch.no_grad():
        pipe.unet.conv_in.weight[0, 0, 0, 0] = float("nan")
    d = tmp_path / "nanmodel"
    pipe.save_pretrained(str(d), safe_serialization=True)
    _expect(tmp_path, "NaN/inf", model=str(d))


def test_pickle_weights_refused_without_flag(tmp_path, tiny_pipe):
    d = tmp_path / "binmodel"
    tiny_pipe.save_pretrained(str(d), safe_serialization=False)
    _expect(tmp_path, "--allow-pickle", model=str(d))


def test_a_file_at_out_gets_the_same_advice_with_and_without_overwrite(tmp_path):
    png = tmp_path / "existing.png"
    png.write_bytes(b"png")
    msgs = []
    for overwrite in (False, True):
        with pytest.raises(EdgeFusionError) as err:
            export(model="tiny", out=png, overwrite=overwrite, **FAST)
        msgs.append(str(err.value))
    assert msgs[0] == msgs[1] and "is a file" in msgs[0] and "pass a folder path with --out" in msgs[0], msgs
    assert png.read_bytes() == b"png"


def test_existing_output_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(EdgeFusionError, match="already exists.*--overwrite"):
        export(model="tiny", out=out, **FAST)
    assert (out / "keep.txt").read_text() == "mine"


def test_failed_overwrite_keeps_the_old_folder(tmp_path, tiny_pipe):
    """An earlier export (it holds manifest.json, so --overwrite may replace it) and a model whose UNet weights
    are truncated: the checks before any work pass, the export stages into a new folder and fails inside its
    torch stage (loading the weights); the old folder must come out untouched and nothing else be left."""
    model = tmp_path / "model"
    tiny_pipe.save_pretrained(str(model), safe_serialization=True)
    weights = next((model / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text('{"old": true}')
    (out / "keep.txt").write_text("mine")
    with pytest.raises(EdgeFusionError, match="could not load") as err:  # raised by the torch stage, in staging
        export(model=str(model), out=out, overwrite=True, **FAST)
    assert "\n" not in str(err.value)
    assert (out / "keep.txt").read_text() == "mine" and (out / "manifest.json").read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out"]  # no staging or trash folder left


def test_cli_error_is_one_line_with_status_1(tmp_path):
    res = subprocess.run([sys.executable, "-m", "edgefusion", "export", "--model", str(tmp_path / "nope"),
                          "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    lines = [line for line in res.stderr.splitlines() if line.startswith("edgefusion: error:")]
    assert len(lines) == 1 and "neither a preset" in lines[0]
    assert not (tmp_path / "o").exists()


def test_overwrite_refuses_a_folder_that_is_not_an_export(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(EdgeFusionError, match="not an edgefusion export"):
        export(model="tiny", out=out, overwrite=True, **FAST)
    assert (out / "thesis.tex").read_text() == "precious"


def test_zero_calibration_steps_and_policy_folder(tmp_path):
    _expect(tmp_path, "at least 1", model="tiny", **{**FAST, "calib_steps": 0})
    (tmp_path / "pol").mkdir()
    _expect(tmp_path, "neither a preset nor an existing file", model="tiny", mpq_policy=str(tmp_path / "pol"))


def test_allow_pickle_still_loads_safetensors(tmp_path, tiny_pipe):
    from edgefusion.models.source import load_pipeline, resolve_model_source

    d = tmp_path / "st"
    tiny_pipe.save_pretrained(str(d), safe_serialization=True)
    assert load_pipeline(resolve_model_source(str(d)), allow_pickle=True).unet is not None


def test_metrics_do_not_score_nan_as_perfect():
    import math

    import numpy as np

    from edgefusion.metrics import mean_sqnr_db, psnr_db, sqnr_db

    a = np.ones(4, np.float32)
    b = a.copy()
    b[0] = np.nan
    assert math.isnan(sqnr_db(a, b)) and math.isnan(psnr_db(a, b)) and math.isnan(mean_sqnr_db([a], [b]))


def test_metrics_take_energies_at_the_ends_of_the_float_range_without_warnings():
    """A zero or subnormal signal over a huge noise (the property test's draws) is a finite, very negative figure,
    not log10(0) with a divide-by-zero warning; a subnormal noise under any signal is the cap."""
    import warnings

    import numpy as np

    from edgefusion.metrics import CAP_DB, energy_ratio_db, mean_sqnr_db, sqnr_db
    from edgefusion.sensitivity.noise_model import sqnr_from

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert energy_ratio_db(0.0, 1e308) == -6080.0
        assert sqnr_from(np.zeros(3), np.full(3, 1e300)) < -5000
        assert energy_ratio_db(1e308, 5e-324) == CAP_DB
        assert sqnr_db(np.zeros(2), np.full(2, 1e150)) < -3000
        assert mean_sqnr_db([np.full(2, 1e-160)], [np.full(2, 1e150)]) < -3000
