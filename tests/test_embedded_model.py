"""The embedded shapes model: dataset, analyser, tokenizer, shipped weights, training smoke run."""

import os
import subprocess
import sys

import numpy as np
import pytest

from edgefusion.embedded import recipe
from edgefusion.embedded.analyzer import analyse, score
from edgefusion.embedded.shapes import (all_combinations, caption_words, held_out, held_out_prompts,
                                        render, sample_attributes)
from edgefusion.models.source import embedded_model_dir, resolve_model_source


def test_analyser_reads_rendered_ground_truth():
    rng = np.random.default_rng(7)
    asked = [sample_attributes(rng, split) for split in ("train", "held_out") for _ in range(300)]
    acc = score([analyse(render(a, rng)) for a in asked], asked)
    assert min(acc.values()) >= 0.98, acc


def test_analyser_reports_nothing_on_a_blank_image():
    r = analyse(np.full((32, 32, 3), 128, np.uint8))
    assert r.shape is None and r.colour is None and r.background == "gray"


def test_held_out_split_is_disjoint_and_about_a_tenth():
    combos = all_combinations()
    held = [a for a in combos if held_out(a)]
    assert 0.07 < len(held) / len(combos) < 0.13
    rng = np.random.default_rng(0)
    assert not any(held_out(sample_attributes(rng, "train")) for _ in range(500))
    prompts = held_out_prompts(100)
    # 99 held-out combinations exist: 100 prompts use each once, one twice (with another seed)
    assert len(set(prompts)) == min(100, len(held)) and all(held_out(a) for a in prompts)


def test_every_caption_word_is_one_token():
    from edgefusion.models.tokenizer import build_clip_tokenizer

    tok = build_clip_tokenizer(recipe.MAX_TOKENS, recipe.word_merges())
    for word in caption_words():
        assert len(tok(word).input_ids) == 3, word  # <start> word <end>
    longest = max((a.caption() for a in all_combinations()), key=lambda c: len(c.split()))
    assert len(tok(longest).input_ids) <= recipe.MAX_TOKENS


def test_shipped_model_loads_offline_and_generates(monkeypatch):
    import torch
    from diffusers import StableDiffusionPipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = embedded_model_dir()
    weights = sum(p.stat().st_size for p in path.rglob("*.safetensors"))
    assert weights <= 25 * 2 ** 20, weights
    assert not list(path.rglob("*.bin"))
    src = resolve_model_source(None)  # the default model is the embedded one
    assert src.kind == "local" and not src.random_weights and src.prompts_file
    pipe = StableDiffusionPipeline.from_pretrained(str(path), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    img = pipe("a large red circle in the center on a white background", num_inference_steps=4, guidance_scale=4.0,
               generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert img.shape == (32, 32, 3) and 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.02


def test_quality_gate_on_a_reduced_prompt_set():
    """The README's quality gate (colour >= 85%, shape >= 70%; chance is 1/6 and 1/4) on 12 held-out prompts at
    the shipped step count and guidance. The full 100-prompt gate is `pytest -m slow -k quality`."""
    from edgefusion.embedded.quality import attribute_accuracy, torch_generator

    generate, _ = torch_generator("embedded")
    acc = attribute_accuracy(generate, n_prompts=12, seed=1)["accuracy"]
    assert acc["colour"] >= 0.85 and acc["shape"] >= 0.70, acc


def test_two_step_training_smoke_run(tmp_path):
    from edgefusion.embedded.train import TrainConfig, train
    from edgefusion.models.source import load_pipeline

    cfg = TrainConfig(out=str(tmp_path / "m"), vae_steps=2, unet_steps=2, decoder_steps=2, latent_cache=64,
                      batch_size=8, log_every=1)
    out = train(cfg, progress=False)
    log = (out / "train_log.csv").read_text().splitlines()
    assert log[0] == "stage,step,loss,seconds" and len(log) == 7
    src = resolve_model_source(str(out))
    assert src.sampler.num_inference_steps == 20 and src.sampler.height == 32
    assert len((out / "edgefusion_prompts.txt").read_text().splitlines()) >= 100
    pipe = load_pipeline(src)
    assert pipe.vae.config.scaling_factor != 1.0  # measured from the latents, not left at the default


@pytest.mark.slow
def test_quality_gate_on_100_held_out_prompts():
    res = subprocess.run([sys.executable, "eval/attribute_accuracy.py", "--prompts", "100", "--json"],
                         capture_output=True, text=True, timeout=3600,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert res.returncode == 0, res.stderr[-1000:]
    import json

    acc = json.loads(res.stdout)["accuracy"]
    assert acc["colour"] >= 0.85 and acc["shape"] >= 0.70, acc
