"""Policy parsing, validation, rule order and JSON/YAML round trips."""

import pytest
import yaml

from edgefusion.errors import EdgeFusionError
from edgefusion.quant.layers import Layer
from edgefusion.quant.policy import PolicySpec, ResolvedPolicy, load_policy, policy_names, resolve_policy
from edgefusion.quant.precision import Precision

LAYERS = [Layer("unet/down_blocks.0.resnets.0.conv1/conv2d_1", "Conv", ["a"]),
          Layer("unet/down_blocks.0.attentions.0.transformer_blocks.0.attn1/sdpa.Softmax0", "Softmax", ["b"]),
          Layer("unet/down_blocks.0.resnets.0.norm1/group_norm", "GroupNorm", ["c"]),
          Layer("unet/down_blocks.0.resnets.0.nonlinearity/silu_1", "SiLU", ["d"]),
          Layer("unet/x/add", "Add", ["e"]),
          Layer("unet/x/view", "Reshape", ["f"], passthrough=True),
          Layer("text_encoder/encoder.layers.0.fc1/linear", "MatMul", ["g"]),
          Layer("vae_decoder/decoder.conv_in/conv2d", "Conv", ["h"])]


def test_presets_exist_and_resolve_as_the_edgefusion_recipe():
    assert {"default", "w8a8", "w8a16", "fp16"} <= set(policy_names())
    res = resolve_policy(load_policy("default"), LAYERS)
    p = res.precisions
    assert p[LAYERS[0].name] is Precision.W8A8
    assert p[LAYERS[1].name] is Precision.W8A16
    assert p[LAYERS[2].name] is Precision.FP16 and p[LAYERS[3].name] is Precision.FP16
    assert p[LAYERS[4].name] is Precision.W8A8
    assert LAYERS[5].name not in p  # passthrough layers take no precision
    assert p[LAYERS[6].name] is Precision.FP16 and p[LAYERS[7].name] is Precision.FP16
    assert res.counts()["Conv"] == {"FP16": 1, "W8A8": 1}


def test_first_matching_rule_wins_and_exact_names_work():
    spec = PolicySpec.from_dict({"rules": {LAYERS[0].name: "FP32", "op:Conv": "W8A16", "re:resnets": "FP16",
                                           "_default": "W8A8"}})
    res = resolve_policy(spec, LAYERS)
    assert res.precisions[LAYERS[0].name] is Precision.FP32
    assert res.precisions[LAYERS[7].name] is Precision.W8A16
    assert res.precisions[LAYERS[2].name] is Precision.FP16
    assert res.precisions[LAYERS[1].name] is Precision.W8A8


def test_round_trips(tmp_path):
    spec = load_policy("default")
    again = PolicySpec.from_dict(yaml.safe_load(spec.to_yaml()))
    assert again.rules == spec.rules and again.name == spec.name
    path = tmp_path / "p.yaml"
    path.write_text(spec.to_yaml())
    assert load_policy(path).rules == spec.rules
    res = resolve_policy(spec, LAYERS)
    res.save(tmp_path / "r.json")
    back = ResolvedPolicy.load(tmp_path / "r.json")
    assert back.precisions == res.precisions and back.counts() == res.counts()


@pytest.mark.parametrize("text, needle", [
    ("rules: [1, 2", "not valid YAML"),
    ("just a string", "not a policy"),
    ("rules:\n  op:Conv: W8A8\n", "no '_default'"),
    ("rules:\n  _default: W8A8\n  op:Conv: FP16\n", "must be the last"),
    ("rules:\n  op:Convolution2D: W8A8\n  _default: W8A8\n", "unknown op type 'Convolution2D'"),
    ("rules:\n  op:Conv: INT4\n  _default: W8A8\n", "unknown precision 'INT4'"),
    ("rules:\n  're:([': FP16\n  _default: W8A8\n", "not a valid regular expression"),
    ("rules:\n  _default: W8A8\nextra: 1\n", "unknown top-level keys"),
])
def test_malformed_policies_give_one_line_errors(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(EdgeFusionError) as err:
        load_policy(path)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unknown_preset_names_the_choices():
    with pytest.raises(EdgeFusionError, match="neither a preset nor an existing file.*default"):
        load_policy("int3-everything")
