"""Model sources (presets, local folders) and the calibration set."""

import json

import numpy as np
import pytest

from edgefusion.calibration.capture import CalibrationSet
from edgefusion.models.presets import load_preset_config, preset_names
from edgefusion.models.source import ModelSource, load_pipeline, resolve_model_source


@pytest.mark.parametrize("name, published", [("sd-v1.5", 859.5), ("bk-sdm-base", 579.4), ("bk-sdm-small", 482.3),
                                             ("bk-sdm-tiny", 323.4)])
def test_preset_unet_parameter_counts_match_published(name, published):
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**load_preset_config(name)["unet"])
    assert round(sum(p.numel() for p in unet.parameters()) / 1e6, 1) == published


def test_presets_listed():
    assert {"tiny", "sd-v1.5", "bk-sdm-base", "bk-sdm-small", "bk-sdm-tiny"} <= set(preset_names())


def test_local_folder_round_trip(tmp_path, tiny_pipe):
    d = tmp_path / "sd"
    tiny_pipe.save_pretrained(str(d), safe_serialization=True)
    src = resolve_model_source(str(d))
    assert src.kind == "local" and not src.random_weights and src.sampler.height == 32
    assert ModelSource.from_dict(json.loads(json.dumps(src.to_dict()))) == src
    pipe = load_pipeline(src)
    a = dict(pipe.unet.state_dict())
    b = dict(tiny_pipe.unet.state_dict())
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in b)


def test_calibration_counts_round_trip_and_digest(tiny_calibration, tmp_path):
    cal, ver = tiny_calibration
    assert cal.count() == {"text_encoder": 8, "unet": 4 * 4 * 2, "vae_decoder": 4}
    steps = sorted({s.step for s in cal.samples["unet"]})
    assert steps == [0, 1, 2, 3]  # every denoising step is represented
    assert {s.branch for s in cal.samples["unet"]} == {"cond", "uncond"}
    ts = {float(s.inputs["timestep"][0]) for s in cal.samples["unet"]}
    assert len(ts) == 4
    cal.save(tmp_path / "cal")
    back = CalibrationSet.load(tmp_path / "cal")
    assert back.digest() == cal.digest() != ver.digest()
    assert back.count() == cal.count()


def test_calibration_and_verification_prompts_each_span_a_sorted_file():
    from edgefusion.calibration.prompts import read_prompts, split_prompts

    ranked = [f"{i:03d}" for i in range(300)]
    cal, ver = split_prompts(ranked, 8, 8)
    assert len(cal) == 8 and len(ver) == 8 and not set(cal) & set(ver)
    for part in (cal, ver):  # each set reaches both ends of the file, not one half each
        assert int(min(part)) < 40 and int(max(part)) > 260
    assert split_prompts(ranked, 8, 2)[1] == ["060", "210"] and split_prompts(ranked, 3, 0) == (["000", "100",
                                                                                                "200"], [])
    # the embedded model's file lists its large shapes first: calibration must see small ones too
    cal, ver = split_prompts(read_prompts(resolve_model_source("embedded").prompts_file), 8, 2)
    assert any(" small " in p for p in cal) and any(" large " in p for p in cal)
