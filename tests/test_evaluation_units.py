"""Evaluation building blocks without a diffusion model: shards, prompt sets, caption parsing, latency view,
SSIM, FID statistics and distance, per-step errors, and the CLIP / FID weight plumbing (tiny random stand-ins)."""

import numpy as np
import pytest
from eval_weights import FEATURES, reference_stats, tiny_clip, tiny_feature_net

from edgefusion.embedded.shapes import all_combinations, render
from edgefusion.errors import EdgeFusionError
from edgefusion.evaluation.alignment import (
    attribute_accuracy,
    attribute_matches,
    parse_caption,
)
from edgefusion.evaluation.fid import (
    FeatureNet,
    FeatureStats,
    check_fid_files,
    frechet_distance,
    load_reference_stats,
)
from edgefusion.evaluation.image_metrics import image_psnr_db, image_ssim
from edgefusion.evaluation.latency_view import format_latency, read_latency
from edgefusion.evaluation.options import MetricOptions
from edgefusion.evaluation.prompts import Prompt, load_prompt_set, read_prompt_file
from edgefusion.evaluation.shard import ShardSpec, parse_shard
from edgefusion.evaluation.trace import StepTrace, step_errors


def _one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(EdgeFusionError) as err:
        fn(*args, **kwargs)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# --- shards -------------------------------------------------------------------------------------------------------

def test_shards_partition_the_prompt_set():
    prompts = [Prompt(i, f"p{i}") for i in range(11)]
    for n in (1, 2, 3, 4, 11):
        parts = [parse_shard(f"{i}/{n}").select(prompts) for i in range(1, n + 1)]
        flat = sorted(p.index for part in parts for p in part)
        assert flat == list(range(11)), n  # every prompt exactly once
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced
    assert parse_shard(None) == ShardSpec(1, 1) and parse_shard(" 2 / 5 ") == ShardSpec(2, 5)


@pytest.mark.parametrize("bad", ["3/2", "0/2", "1/0", "a/b", "1", "2/-3", "1/2/3"])
def test_bad_shard_specs_are_refused(bad):
    msg = _one_line_error(parse_shard, bad)
    assert bad in msg and "--shard" in msg


# --- prompt sets --------------------------------------------------------------------------------------------------

def test_prompt_file_skips_blank_lines_and_keeps_line_numbers(tmp_path):
    f = tmp_path / "p.txt"
    f.write_bytes("\ufeffa red fox\n\n   \n  two   spaces here \r\nlast".encode("utf-8"))
    ps = read_prompt_file(f)
    assert [p.text for p in ps.prompts] == ["a red fox", "two spaces here", "last"]
    assert [p.line for p in ps.prompts] == [1, 4, 5] and [p.index for p in ps.prompts] == [0, 1, 2]
    assert ps.skipped_blank_lines == 2
    other = tmp_path / "q.txt"
    other.write_text("a red fox\ntwo spaces here\nlast\n")
    assert read_prompt_file(other).digest() == ps.digest()  # content, not layout, defines the set


def test_prompt_file_bad_input(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("ok line\ncaf\xe9 au lait\n".encode("latin-1"))
    msg = _one_line_error(read_prompt_file, bad)
    assert "not UTF-8" in msg and "line 2" in msg
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n")
    assert "holds no prompts" in _one_line_error(read_prompt_file, blank)
    assert "does not exist" in _one_line_error(read_prompt_file, tmp_path / "nope.txt")
    assert "held-out:N" in _one_line_error(load_prompt_set, "held-out:x")
    assert "N >= 1" in _one_line_error(load_prompt_set, "held-out:0")


def test_held_out_prompt_set_matches_the_quality_gate():
    from edgefusion.embedded.shapes import held_out_prompts

    ps = load_prompt_set("held-out:7", seed=3)
    assert [p.text for p in ps.prompts] == [a.caption() for a in held_out_prompts(7, 3)]


# --- text alignment -----------------------------------------------------------------------------------------------

def test_every_caption_parses_back_and_other_text_does_not():
    for a in all_combinations():
        assert parse_caption(a.caption()) == a
    assert parse_caption("a photo of a cat") is None
    assert parse_caption("a small red blob in the top left on a blue background") is None


def test_attribute_matches_on_rendered_images():
    a = all_combinations()[5]
    assert attribute_matches(render(a) / 255.0, a) == {k: True for k in
                                                       ("colour", "shape", "size", "position", "background", "all")}
    wrong = next(b for b in all_combinations() if b.colour != a.colour and b.background == a.background
                 and (b.shape, b.size, b.position) == (a.shape, a.size, a.position))
    m = attribute_matches(render(wrong) / 255.0, a)
    assert not m["colour"] and not m["all"] and m["shape"]
    acc = attribute_accuracy([attribute_matches(render(a) / 255.0, a), m])
    assert acc["colour"] == 0.5 and acc["shape"] == 1.0 and attribute_accuracy([]) is None


# --- latency ------------------------------------------------------------------------------------------------------

def test_latency_is_read_defensively():
    assert read_latency({"latency": None}) is None and format_latency(None) == "not estimated"
    assert read_latency({}) is None and read_latency({"latency": {"total_ms": "fast"}}) is None
    lat = {"device": "exynos2400", "backend": "npu", "steps": 20, "total_ms": 812.5, "tiled": False,
           "components": {"text_encoder": {"ms": 3.0, "calls": 2}, "unet": {"ms": 19.5, "calls": 40},
                          "vae_decoder": {"ms": "?", "calls": 1}}}
    got = read_latency({"latency": lat})
    assert got["total_ms"] == 812.5 and got["steps"] == 20 and got["device"] == "exynos2400"
    assert got["components"] == {"text_encoder": {"ms": 3.0, "calls": 2}, "unet": {"ms": 19.5, "calls": 40}}
    assert format_latency(got) == "812.5 ms"


# --- image metrics ------------------------------------------------------------------------------------------------

def test_ssim_and_psnr():
    rng = np.random.default_rng(0)
    img = render(all_combinations()[3]).astype(np.float32) / 255
    assert image_ssim(img, img) == pytest.approx(1.0, abs=1e-6)
    slight = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
    heavy = np.clip(img + rng.normal(0, 0.2, img.shape), 0, 1)
    assert 1.0 > image_ssim(img, slight) > image_ssim(img, heavy) > 0
    assert image_psnr_db(img, slight) > image_psnr_db(img, heavy)
    assert np.isnan(image_ssim(img, np.full_like(img, np.nan)))
    assert 0 < image_ssim(img[:8, :8], slight[:8, :8]) < 1  # smaller than the 11 px window


# --- FID ----------------------------------------------------------------------------------------------------------

def test_feature_stats_merge_exactly_and_match_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(7, 5)), rng.normal(1, 2, size=(4, 5))
    merged = FeatureStats.of(a).merged(FeatureStats.of(b))
    mu, sigma = merged.mu_sigma()
    both = np.concatenate([a, b])
    np.testing.assert_allclose(mu, both.mean(0), atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(both, rowvar=False), atol=1e-10)


def test_frechet_distance_agrees_with_torchmetrics():
    import torch
    from torchmetrics.image.fid import (
        _compute_fid,  # an independent implementation (eigenvalues, not sqrtm)
    )

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(50, 6)), rng.normal(0.5, 1.5, size=(60, 6))
    (m1, s1), (m2, s2) = FeatureStats.of(x).mu_sigma(), FeatureStats.of(y).mu_sigma()
    ours = frechet_distance(m1, s1, m2, s2)
    theirs = float(_compute_fid(*(torch.from_numpy(t) for t in (m1, s1, m2, s2))))
    assert ours == pytest.approx(theirs, rel=1e-6) and ours > 1
    assert abs(frechet_distance(m1, s1, m1, s1)) < 1e-6


def test_fid_plumbing_with_a_tiny_torchscript_net(tmp_path):
    net = FeatureNet(tiny_feature_net(tmp_path / "net.pt"))
    rng = np.random.default_rng(3)
    feats = net([rng.random((32, 32, 3)) for _ in range(3)])
    assert feats.shape == (3, FEATURES) and np.isfinite(feats).all() and feats.std() > 0
    stats = reference_stats(tmp_path / "ref.npz")
    mu, sigma = load_reference_stats(stats, FEATURES)
    assert mu.shape == (FEATURES,) and sigma.shape == (FEATURES, FEATURES)
    assert "do not fit features of width 16" in _one_line_error(load_reference_stats, stats, 16)
    np.savez(tmp_path / "wrong.npz", mean=mu)
    assert "not mu and sigma" in _one_line_error(load_reference_stats, tmp_path / "wrong.npz")
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    assert "not a loadable TorchScript" in _one_line_error(FeatureNet, tmp_path / "junk.pt")


def test_missing_metric_weights_name_the_file_and_the_flag(tmp_path):
    assert "--clip-model" in _one_line_error(MetricOptions(clip=True).resolve)
    msg = _one_line_error(MetricOptions(clip_model=tmp_path / "nope").resolve)
    assert "nope" in msg and "does not exist" in msg and "--clip-model" in msg
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    msg = _one_line_error(MetricOptions(clip_model=tmp_path / "half").resolve)
    assert "has no model.safetensors" in msg and "--clip-model" in msg
    assert "--fid-inception" in _one_line_error(MetricOptions(fid=True).resolve)
    msg = _one_line_error(MetricOptions(fid_inception=tmp_path / "inception-2015-12-05.pt").resolve)
    assert "inception-2015-12-05.pt" in msg and "--fid-inception" in msg
    net = tiny_feature_net(tmp_path / "net.pt")
    msg = _one_line_error(check_fid_files, net, tmp_path / "coco_val2014.npz")
    assert "coco_val2014.npz" in msg and "--fid-ref-stats" in msg
    clip = tiny_clip(tmp_path / "clip")
    msg = _one_line_error(MetricOptions(coco=True, clip_model=clip, fid_inception=net).resolve)
    assert "--fid-ref-stats" in msg
    ok = MetricOptions(coco=True, clip_model=clip, fid_inception=net,
                       fid_ref_stats=reference_stats(tmp_path / "r.npz")).resolve()
    assert ok["clip_model"] == clip.resolve() and ok["fid_ref_stats"].name == "r.npz"
    assert MetricOptions().resolve() == {"clip_model": None, "fid_inception": None, "fid_ref_stats": None}


def test_clip_score_with_a_tiny_random_clip(tmp_path):
    import torch
    from transformers import CLIPModel, CLIPProcessor

    from edgefusion.evaluation.clip_score import ClipScorer

    folder = tiny_clip(tmp_path / "clip")
    scorer = ClipScorer(folder)
    img = render(all_combinations()[0]).astype(np.float32) / 255
    scores = {t: scorer(img, t) for t in ("a red circle", "a blue square on a green background")}
    assert all(0 <= s <= 100 for s in scores.values()) and len(set(scores.values())) == 2
    assert scorer(img, "a red circle") == scores["a red circle"]  # deterministic
    # independent path: CLIP's own logits are logit_scale * cosine
    model, proc = CLIPModel.from_pretrained(str(folder)).eval(), CLIPProcessor.from_pretrained(str(folder))
    inputs = proc(text=["a red circle"], images=[(img * 255).round().astype(np.uint8)], return_tensors="pt",
                  padding=True)
    with torch.no_grad():
        out = model(**inputs)
    cosine = float(out.logits_per_image[0, 0] / model.logit_scale.detach().exp())
    assert scores["a red circle"] == pytest.approx(100 * max(cosine, 0.0), abs=1e-3)
    long = scorer(img, " ".join(["red"] * 300))  # longer than CLIP's 77 tokens: truncated, not an error
    assert 0 <= long <= 100


# --- per-step errors ----------------------------------------------------------------------------------------------

def test_step_errors():
    rng = np.random.default_rng(4)
    ref = StepTrace([999.0, 500.0], [rng.normal(size=(1, 4, 2, 2)) for _ in range(2)],
                    [rng.normal(size=(1, 4, 2, 2)) for _ in range(2)])
    same = step_errors(ref, ref)
    assert same == ([200.0, 200.0], [200.0, 200.0])
    noisy = StepTrace(ref.timesteps, [n + 0.1 * rng.normal(size=n.shape) for n in ref.noise],
                      [lat + 0.01 for lat in ref.latents])
    noise, latent = step_errors(ref, noisy)
    assert all(10 < x < 40 for x in noise) and all(30 < x < 80 for x in latent)
    with pytest.raises(ValueError):
        step_errors(ref, StepTrace([999.0, 400.0], ref.noise, ref.latents))
