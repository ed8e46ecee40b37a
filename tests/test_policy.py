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
    assert {"default", "recipe", "w8a8", "w8a16", "fp16"} <= set(policy_names())
    res = resolve_policy(load_policy("recipe"), LAYERS)
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


@pytest.mark.parametrize("text, needle", [
    # "billion laughs": refused at the first anchor, before any expansion (it used to run out of memory)
    ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
     'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n'
     'f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n'
     'name: *h\nrules:\n  _default: W8A8\n', "anchors/aliases"),
    ("rules:\n  op:Conv: &p W8A8\n  _default: *p\n", "anchors/aliases"),
    ("rules:\n  op:Conv: W8A8\n  op:Conv: FP16\n  _default: W8A8\n", "the key 'op:Conv' twice"),
    ("rules:\n  123: W8A8\n  _default: W8A8\n", "not a string (123)"),
    ("rules:\n  ~: W8A8\n  _default: W8A8\n", "not a string (null)"),
    ("rules:\n  true: W8A8\n  _default: W8A8\n", "not a string (true)"),
])
def test_unsafe_yaml_is_refused(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(EdgeFusionError) as err:
        load_policy(path)
    assert needle.replace("(null)", "('~')").replace("(123)", "('123')").replace("(true)", "('true')") \
        in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_policy_size_and_rule_count_are_bounded(tmp_path):
    from edgefusion.quant.policy import MAX_POLICY_BYTES, MAX_RULES

    many = tmp_path / "many.yaml"
    many.write_text("rules:\n" + "".join(f"  l{i}: W8A8\n" for i in range(MAX_RULES)) + "  _default: W8A8\n")
    with pytest.raises(EdgeFusionError, match=f"more than the {MAX_RULES}"):
        load_policy(many)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_POLICY_BYTES + "\nrules:\n  _default: W8A8\n")
    with pytest.raises(EdgeFusionError, match="MiB, over the"):
        load_policy(big)
    with pytest.raises(EdgeFusionError, match="more than the"):
        PolicySpec.from_dict({"rules": {f"l{i}": "W8A8" for i in range(MAX_RULES + 1)}})


def test_rules_that_match_no_layer_are_named():
    spec = PolicySpec.from_dict({"rules": {"re:^untet/": "FP16", "op:Softmax": "W8A16", "op:Gemm": "FP16",
                                           "re:^unet/x/view": "FP16", LAYERS[4].name: "FP32", "_default": "W8A8"}})
    # Gemm: no such layer; the Reshape is passthrough (never takes a precision)
    assert spec.unmatched_rules(LAYERS) == ["re:^untet/", "op:Gemm", "re:^unet/x/view"]
    assert load_policy("recipe").unmatched_rules(LAYERS) == ["re:^unet/time_proj/", "re:^unet/conv_in/", "op:LayerNorm",
                                                                 "op:Gemm"]


def test_unknown_policy_lists_auto_where_auto_is_accepted():
    from edgefusion.sensitivity.auto_export import policy_or_auto

    with pytest.raises(EdgeFusionError, match=r"use one of .*default.*, auto or a path"):
        policy_or_auto("defualt")


def test_rules_matching_no_layer_of_the_exported_graphs_warn_or_fail_under_strict(tiny_float_graphs):
    from edgefusion import diagnostics
    from edgefusion.export.policy_check import check_rules_match

    spec = PolicySpec.from_dict({"rules": {"re:^untet/": "FP16", **load_policy("default").to_dict()["rules"]}})
    with diagnostics.session() as s:
        assert check_rules_match(spec, tiny_float_graphs) == ["re:^untet/"]
    assert len(s.warnings) == 1 and "'re:^untet/'" in s.warnings[0]
    with diagnostics.session(strict=True), pytest.raises(EdgeFusionError, match="untet.*under --strict"):
        check_rules_match(spec, tiny_float_graphs)
    with diagnostics.session(strict=True):  # every rule of the shipped presets matches a layer of an SD model
        for name in policy_names():
            assert check_rules_match(load_policy(name), tiny_float_graphs) == []


def test_last_binds_to_the_highest_index_of_the_graph():
    names = ["unet/down_blocks.0.resnets.0.conv1/conv2d", "unet/down_blocks.1.resnets.0.conv1/conv2d_1",
             "unet/up_blocks.0.resnets.0.conv1/conv2d_2", "unet/up_blocks.3.resnets.2.conv1/conv2d_3",
             "unet/up_blocks.3/cat_5", "unet/up_blocks.12x/add"]  # 'up_blocks.12x' is no index
    layers = [Layer(n, "Conv", [str(i)]) for i, n in enumerate(names)]
    spec = PolicySpec.from_dict({"rules": {"re:^unet/(down_blocks\\.0|up_blocks\\.{last})[./]": "W8A16",
                                           "re:^unet/mid_blocks\\.{last}/": "FP16", "_default": "W8A8"}})
    bound = spec.bound(layers)
    assert bound.rules[0][0] == "re:^unet/(down_blocks\\.0|up_blocks\\.3)[./]"
    assert bound.rules[1][0] == "re:^unet/mid_blocks\\.{last}/"  # no such list: left unbound, matches nothing
    p = resolve_policy(spec, layers).precisions
    assert [p[n].value for n in names] == ["W8A16", "W8A8", "W8A8", "W8A16", "W8A16", "W8A8"]
    assert spec.unmatched_rules(layers) == ["re:^unet/mid_blocks\\.{last}/"]  # named as written
    # bound per graph: a VAE decoder with more up blocks does not move the UNet's last one
    vae = [Layer(f"vae_decoder/decoder.up_blocks.{i}.resnets.0.conv1/conv2d_{i}", "Conv", [f"v{i}"]) for i in range(6)]
    assert spec.unmatched_rules(vae + layers) == ["re:^unet/mid_blocks\\.{last}/"]
    assert spec.to_dict()["rules"] == PolicySpec.from_dict(spec.to_dict()).to_dict()["rules"]  # saved unbound


def test_default_gives_the_outermost_level_16_bit_activations():
    """`default` = `recipe` + W8A16 on the first down block, the last up block and the output head, except their
    norms and SiLU (FP16, as in the recipe) and their attention projections and MatMuls (W8A8); the weighted layers
    on the level's edges read and write one width (configs/policies/default.yaml, README)."""
    cases = [("unet/down_blocks.0.resnets.0.conv1/conv2d_1", "Conv", "W8A16", "W8A8"),
             ("unet/down_blocks.0.resnets.0.norm1/group_norm", "GroupNorm", "FP16", "FP16"),
             ("unet/down_blocks.0.downsamplers.0.conv/conv2d_5", "Conv", "W8A16", "W8A8"),
             ("unet/down_blocks.1.resnets.0.conv1/conv2d_6", "Conv", "W8A8", "W8A8"),
             ("unet/down_blocks.1.resnets.0.conv_shortcut/conv2d_8", "Conv", "W8A16", "W8A8"),
             ("unet/down_blocks.1.resnets.0.time_emb_proj/linear_13", "Gemm", "W8A16", "W8A8"),
             ("unet/up_blocks.0.resnets.0.conv1/conv2d_9", "Conv", "W8A8", "W8A8"),
             ("unet/up_blocks.1/cat_5", "Concat", "W8A8", "W8A8"),
             ("unet/up_blocks.1.attentions.1.transformer_blocks.0.attn1/sdpa.Softmax0", "Softmax", "W8A16", "W8A16"),
             ("unet/up_blocks.1.attentions.1.transformer_blocks.0.attn1.to_q/linear_3", "MatMul", "W8A8", "W8A8"),
             ("unet/up_blocks.1.attentions.1.transformer_blocks.0.attn2/sdpa.MatMul0", "MatMul", "W8A8", "W8A8"),
             ("unet/up_blocks.1.attentions.1.transformer_blocks.0.attn1.to_out.0/linear_4", "MatMul", "W8A16",
              "W8A8"),
             ("unet/up_blocks.1.attentions.1.transformer_blocks.0.ff.net.2/linear_7", "MatMul", "W8A16", "W8A8"),
             ("unet/up_blocks.1.attentions.1.proj_out/conv2d_37", "Conv", "W8A16", "W8A8"),
             ("unet/up_blocks.1.resnets.1/add_39", "Add", "W8A16", "W8A8"),
             ("unet/conv_act/silu_25", "SiLU", "FP16", "FP16"),
             ("unet/conv_out/conv2d_38", "Conv", "W8A16", "W8A8"),
             ("unet/conv_in/conv2d", "Conv", "W8A16", "W8A16")]
    layers = [Layer(name, op, [str(i)]) for i, (name, op, _, _) in enumerate(cases)]
    new = resolve_policy(load_policy("default"), layers).precisions
    old = resolve_policy(load_policy("recipe"), layers).precisions
    assert [(la.name, new[la.name].value) for la in layers] == [(c[0], c[2]) for c in cases]
    assert [(la.name, old[la.name].value) for la in layers] == [(c[0], c[3]) for c in cases]
