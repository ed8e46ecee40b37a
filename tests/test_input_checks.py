"""Inputs nobody planned for: unsupported architectures, unwritable outputs, prompts without text or outside the
vocabulary, NaN flags, a bug in a child. Each is one line (no ANSI codes), status 1, before any heavy work."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgefusion.errors import EdgeFusionError


def _cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "edgefusion", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _one_error_line(res) -> str:
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    assert "\x1b" not in res.stderr and "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("edgefusion: error:")]
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tiny_pipe):
    d = tmp_path_factory.mktemp("sd") / "tiny"
    tiny_pipe.save_pretrained(str(d), safe_serialization=True)
    return d


def _variant(tiny_folder, tmp_path, unet: dict | None = None, index: dict | None = None,
             sampler: dict | None = None) -> Path:
    import shutil

    d = tmp_path / "variant"
    shutil.copytree(tiny_folder, d)
    for rel, extra in (("unet/config.json", unet), ("model_index.json", index)):
        if extra:
            cfg = json.loads((d / rel).read_text())
            (d / rel).write_text(json.dumps({**cfg, **extra}))
    if sampler:
        (d / "edgefusion_sampler.json").write_text(json.dumps(sampler))
    return d


@pytest.mark.parametrize("unet, index, needle", [
    ({"addition_embed_type": "text_time", "addition_time_embed_dim": 8,
      "projection_class_embeddings_input_dim": 80}, None, "addition_embed_type='text_time'"),
    ({"class_embed_type": "timestep"}, None, "class_embed_type='timestep'"),
    ({"encoder_hid_dim": 16, "encoder_hid_dim_type": "text_proj"}, None, "encoder_hid_proj"),
    ({"time_cond_proj_dim": 16}, None, "time_cond_proj_dim=16"),
    (None, {"_class_name": "StableDiffusionXLPipeline"}, "StableDiffusionXLPipeline"),
])
def test_unsupported_architectures_are_refused_before_any_work(tiny_folder, tmp_path, unet, index, needle):
    from edgefusion.models.source import resolve_model_source

    model = _variant(tiny_folder, tmp_path, unet, index)
    with pytest.raises(EdgeFusionError) as err:
        resolve_model_source(str(model))
    assert needle in str(err.value) and "cannot export" in str(err.value) and "\n" not in str(err.value)


def test_sdxl_style_unet_from_the_command_line(tiny_folder, tmp_path):
    """The issue's case: export gave a 58-line traceback, `latency --model` ANSI codes and unusable advice."""
    model = _variant(tiny_folder, tmp_path, {"addition_embed_type": "text_time", "addition_time_embed_dim": 8,
                                             "projection_class_embeddings_input_dim": 80})
    for args in (["export", "--model", str(model), "--out", str(tmp_path / "o")], ["latency", "--model", str(model)]):
        line = _one_error_line(_cli(*args))
        assert "text_time" in line and "Stable Diffusion 1.x/2.x" in line, line
    assert not (tmp_path / "o").exists()


def test_an_unexpected_error_in_a_child_is_one_line_and_a_log(tiny_folder, tmp_path):
    """A model folder whose sampler file asks for 30x30 images: nothing of ours checks that, diffusers raises a
    ValueError inside the torch stage; reported as one line naming the log that holds the traceback."""
    model = _variant(tiny_folder, tmp_path, sampler={"height": 30, "width": 30, "num_inference_steps": 2,
                                                     "guidance_scale": 2.0})
    logs = tmp_path / "logs"
    line = _one_error_line(_cli("export", "--model", str(model), "--out", str(tmp_path / "o"),
                                "--calibration-method", "minmax", "--calib-prompts", "1",
                                "--calib-steps", "1", "--verify-prompts", "1", "--no-progress",
                                env={"EDGEFUSION_LOG_DIR": str(logs)}))
    assert "unexpected error in the torch stage process" in line, line
    log = Path(line.split("the traceback is in ", 1)[1].split(";")[0])
    assert log.parent == logs and "Traceback (most recent call last)" in log.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "variant"]  # no output, no staging


def test_error_messages_carry_no_ansi_codes():
    err = EdgeFusionError("\x1b[31mred\x1b[0m problem\nsecond line", "fix \x1b[1mit\x1b[0m")
    assert str(err) == "red problem second line; fix it"


def _unwritable(tmp_path) -> Path:
    """An existing folder this process cannot create files in (as root, permission bits do not stop writes, but
    /proc refuses new files)."""
    if os.geteuid() == 0:
        return Path("/proc")
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    return d


def test_unwritable_outputs_are_refused_before_any_work(tmp_path, tiny_exports):
    bad = _unwritable(tmp_path)
    for args in (["export", "--model", "tiny", "--out", str(bad / "exp")],
                 ["profile", "--model", "tiny", "--out", str(bad / "prof")],
                 ["generate", str(tiny_exports["default"]), "--prompt", "a cat", "--out", str(bad / "x.png")]):
        line = _one_error_line(_cli(*args))
        assert "cannot be written" in line and "--out" in line, line
    res = subprocess.run([sys.executable, "eval/evaluate.py", str(tiny_exports["default"]), "--out", str(bad / "ev")],
                         capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    assert res.returncode == 1 and "cannot be written" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_prompts_without_printable_text_and_nan_flags(tmp_path, tiny_exports):
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"a red square\n\x00\x00\x00\n")
    line = _one_error_line(_cli("export", "--model", "tiny", "--prompts-file", str(nul), "--out", str(tmp_path / "o")))
    assert "line 2" in line and "no printable text" in line, line
    png = tmp_path / "x.png"
    line = _one_error_line(_cli("generate", str(tiny_exports["default"]), "--prompt", "\x01\x02", "--out", str(png)))
    assert "no printable text" in line, line
    for args in (["generate", str(tiny_exports["default"]), "--prompt", "a cat", "--guidance-scale", "nan", "--out",
                  str(png)],
                 ["export", "--model", "tiny", "--max-graph-mb", "inf"],
                 ["export", "--model", "tiny", "--calib-prompts", "-2"],
                 ["profile", "--model", "tiny", "--target-sqnr", "nan"]):
        line = _one_error_line(_cli(*args))
        assert "finite" in line or "negative" in line, line
    assert not (tmp_path / "o").exists() and not png.exists()


def test_prompts_outside_the_vocabulary_warn_with_pieces_and_cut():
    from transformers import CLIPTokenizer

    from edgefusion import diagnostics
    from edgefusion.models.source import embedded_model_dir
    from edgefusion.models.tokenizer import prompt_fit, prompt_fit_warning, warn_prompt_fit

    tok = CLIPTokenizer.from_pretrained(str(embedded_model_dir() / "tokenizer"))
    assert prompt_fit_warning(tok, "a small red triangle in the top left on a blue background") is None
    fit = prompt_fit(tok, "a photo of an astronaut riding a horse")
    assert fit["split"]["astronaut"] == 9 and fit["tokens"] == 29 and fit["capacity"] == 18
    assert fit["cut"] == "t riding a horse"  # what the model never sees (from inside the split 'astronaut')
    note = prompt_fit_warning(tok, "a photo of an astronaut riding a horse")
    assert "split into 27 pieces" in note and "29 tokens" in note and "'t riding a horse' is cut" in note, note
    with diagnostics.session() as s:
        warn_prompt_fit(tok, ["a photo of an astronaut", "a red circle on a white background"], "prompts")
    assert len(s.warnings) == 1 and s.warnings[0].startswith("1 of 2 prompts are not read as written")
    with diagnostics.session(strict=True), pytest.raises(EdgeFusionError, match="under --strict"):
        warn_prompt_fit(tok, ["a photo of an astronaut"])


def test_warnings_and_strict_cross_into_the_stage_processes():
    """A warning raised in a spawned stage joins the caller's record (the manifest's `warnings`); under --strict
    the stage fails with it as a one-line error."""
    from edgefusion import diagnostics
    from edgefusion.isolated import run_isolated

    with diagnostics.session() as s:
        text, _ = run_isolated(diagnostics.warn, "a warning from a child", "its fix")
    assert s.warnings == [text] == ["a warning from a child; its fix"]
    with diagnostics.session(strict=True), pytest.raises(EdgeFusionError, match="from a child .*under --strict"):
        run_isolated(diagnostics.warn, "a warning from a child")


def _write_to_stdout_natively():
    os.write(1, b"# NATIVE: a library writing to file descriptor 1\n")
    print("and a stray print")


def test_a_stage_never_writes_to_the_commands_stdout():
    """`--json` prints the manifest alone on stdout: what a spawned stage or a native library in it writes to
    stdout (onnxruntime-qnn's HTP library prints a line) goes to stderr."""
    code = ("import sys; sys.path.insert(0, 'tests'); from test_input_checks import _write_to_stdout_natively\n"
            "from edgefusion.isolated import run_isolated\n"
            "if __name__ == '__main__':\n    run_isolated(_write_to_stdout_natively)\n    print('{}')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout == "{}\n" and "# NATIVE" in res.stderr and "stray print" in res.stderr, (res.stdout, res.stderr)
