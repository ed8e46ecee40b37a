"""optimum's ORTStableDiffusionPipeline and the diffusers 0.35 / transformers 4.57 stack it needs (slow
CLIPTokenizer) load the export folder unchanged and reproduce edgefusion's images.

optimum-onnx pins transformers<4.58, so it runs in its own environment: EDGEFUSION_CLIENTS_PYTHON names that
environment's python (`.ci/run` builds it from tests/clients/requirements.txt). Without it the tests are skipped
with that reason; with EDGEFUSION_REQUIRE_CLIENTS=1 (CI) a missing environment is an error instead."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgefusion.metrics import psnr_db

PY = os.environ.get("EDGEFUSION_CLIENTS_PYTHON", "")
WHY = None if PY and Path(PY).is_file() else "EDGEFUSION_CLIENTS_PYTHON does not name the optimum client " \
                                               "environment's python (see tests/clients/requirements.txt)"
if WHY and os.environ.get("EDGEFUSION_REQUIRE_CLIENTS") == "1":
    raise RuntimeError(f"EDGEFUSION_REQUIRE_CLIENTS=1 but {WHY}")
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")
SCRIPT = Path(__file__).parent / "clients" / "generate_with_clients.py"
PROMPT, SEED, STEPS, GS = "a red cube on a table", 5, 3, 7.5
QDQ_MIN_PSNR_DB = 45.0  # issue 14: a QDQ export's client image vs `edgefusion generate`


@pytest.fixture(scope="module")
def fp16_export(tmp_path_factory) -> Path:
    from edgefusion.export.run_export import export

    out = tmp_path_factory.mktemp("clients") / "fp16"
    export(model="tiny", mpq_policy="fp16", out=out, calib_prompts=2, calib_steps=2, verify_prompts=1,
           progress=False)
    return out


def _clients(folder: Path, out: Path) -> dict:
    proc = subprocess.run([PY, str(SCRIPT), str(folder), str(out), "--prompt", PROMPT, "--seed", str(SEED),
                           "--steps", str(STEPS), "--guidance", str(GS)], capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, proc.stderr[-3000:]
    result = json.loads(lines[0][7:])
    for name, rec in result.items():
        assert rec["ok"], f"{name}: {rec.get('error')}\n{rec.get('trace')}"
        assert rec["tokenizer"] == "CLIPTokenizer"  # transformers 4.57's slow tokenizer: vocab.json + merges.txt
    return result


def _runtime_images(folder: Path, ort_defaults: bool) -> tuple[np.ndarray, np.ndarray]:
    """edgefusion's runtime image with the folder's scheduler, and with the DDIM one the diffusers client uses."""
    from diffusers import DDIMScheduler

    from edgefusion.runtime.pipeline import OnnxStableDiffusion

    from edgefusion.runtime.session import open_session, run_session

    runtime = OnnxStableDiffusion(folder, ort_defaults=ort_defaults)
    own = runtime(PROMPT, seed=SEED, steps=STEPS, guidance_scale=GS)
    cfg = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    runtime.scheduler = DDIMScheduler.from_config(cfg, clip_sample=False)
    final = []
    runtime(PROMPT, seed=SEED, steps=STEPS, guidance_scale=GS, on_step=lambda i, t, n, latents: final.append(latents))
    # decoded with the diffusers pipeline's own arithmetic: it multiplies by 1 / 0.18215 where edgefusion divides by
    # the folder's factor; one rounding apart, which a quantized decoder can turn into another image (2026-11-30:
    # 0.00049 apart with identical latents at every step)
    z = (1 / 0.18215 * final[-1]).astype(np.float32)
    vae = open_session(folder / "vae_decoder" / "model.onnx", ort_defaults=ort_defaults)
    image = run_session(vae, {"latent_sample": z})[0]
    return own, np.clip(image / 2 + 0.5, 0, 1)[0].transpose(1, 2, 0).astype(np.float32)


def test_fp16_export_identical_in_optimum_and_diffusers(fp16_export, tmp_path):
    _clients(fp16_export, tmp_path)
    own, ddim = _runtime_images(fp16_export, ort_defaults=False)
    assert np.array_equal(np.load(tmp_path / "optimum.npy"), own)
    assert np.array_equal(np.load(tmp_path / "diffusers.npy"), ddim)


@pytest.fixture(scope="module")
def qdq_client_images(tiny_exports, tmp_path_factory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("qdq_clients")
    _clients(tiny_exports["default"], out)
    return {"optimum": np.load(out / "optimum.npy"), "diffusers": np.load(out / "diffusers.npy")}


def test_qdq_export_identical_to_runtime_under_ort_default_options(tiny_exports, qdq_client_images):
    """The clients compute exactly what edgefusion's runtime computes when it opens the graphs as they do."""
    own_default, ddim_default = _runtime_images(tiny_exports["default"], ort_defaults=True)
    assert np.array_equal(qdq_client_images["optimum"], own_default)
    assert np.array_equal(qdq_client_images["diffusers"], ddim_default)


def test_qdq_client_image_within_45_db_of_generate(tiny_exports, qdq_client_images):
    own, _ = _runtime_images(tiny_exports["default"], ort_defaults=False)
    got = psnr_db(own, qdq_client_images["optimum"])
    print(f"optimum vs edgefusion generate (default QDQ, tiny): {got:.2f} dB")
    assert got >= QDQ_MIN_PSNR_DB
