"""Property-based tests (hypothesis): the policy loader and the sensitivity-report validation accept exactly what
they should, and anything else is a one-line EdgeFusionError, never another exception. Bounded: a few hundred
examples each, no deadline (CI machines are slow), a few seconds in all."""

import copy
import json
import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefusion.errors import EdgeFusionError
from edgefusion.quant.layers import LOGICAL_OP_TYPES
from edgefusion.quant.policy import PolicySpec, parse_policy_text
from edgefusion.quant.precision import Precision

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

precisions = st.sampled_from([p.value for p in Precision])
names = st.text(st.characters(codec="ascii", categories=["L", "N"], include_characters="/._"), min_size=1,
                max_size=30).filter(lambda s: s != "_default" and not s.startswith(("re:", "op:")))
keys = st.one_of(names, st.sampled_from(sorted(LOGICAL_OP_TYPES)).map(lambda o: f"op:{o}"),
                 names.map(lambda n: "re:^" + n.replace(".", r"\.")))
rule_maps = st.dictionaries(keys, precisions, max_size=12)


def _load_text(text: str) -> PolicySpec:
    return PolicySpec.from_dict(parse_policy_text(text), where="policy")


@SETTINGS
@given(rule_maps, precisions)
def test_valid_policies_round_trip_through_yaml(rules, default):
    spec = PolicySpec.from_dict({"name": "p", "rules": {**rules, "_default": default}})
    again = _load_text(spec.to_yaml())
    assert again.rules == spec.rules and again.name == "p"


@SETTINGS
@given(rule_maps.filter(bool), precisions, st.data())
def test_a_repeated_key_is_refused(rules, default, data):
    key = data.draw(st.sampled_from(sorted(rules)))
    lines = [f"  {json.dumps(k)}: {v}" for k, v in rules.items()] + [f"  {json.dumps(key)}: {default}",
                                                                      f"  _default: {default}"]
    with pytest.raises(EdgeFusionError, match="twice"):
        _load_text("rules:\n" + "\n".join(lines) + "\n")


@SETTINGS
@given(st.one_of(st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False)), precisions)
def test_a_key_that_is_not_a_string_is_refused(key, default):
    text = yaml.safe_dump({"rules": {key: "W8A8", "_default": default}}, sort_keys=False)
    with pytest.raises(EdgeFusionError, match="not a string"):
        _load_text(text)


@SETTINGS
@given(rule_maps, precisions, st.sampled_from(["name", "rules", "value"]))
def test_any_anchor_or_alias_is_refused(rules, default, where):
    body = "".join(f"  {json.dumps(k)}: {v}\n" for k, v in rules.items())
    if where == "name":
        text = f"name: &n x\ndescription: *n\nrules:\n{body}  _default: {default}\n"
    elif where == "rules":
        text = f"rules: &r\n{body}  _default: {default}\n"
    else:
        text = f"rules:\n{body}  _default: &v {default}\n"
    with pytest.raises(EdgeFusionError, match="anchors/aliases"):
        _load_text(text)


@SETTINGS
@given(st.text(max_size=300))
def test_arbitrary_text_is_a_policy_or_one_line_error(text):
    try:
        _load_text(text)
    except EdgeFusionError as err:
        assert "\n" not in str(err)


# -- sensitivity reports: a small synthetic one (two layers, three sites, one weight), then mutations

def _report_dict(steps=(0, 1)) -> dict:
    from edgefusion.sensitivity.report import REPORT_FORMAT

    n = len(steps)
    return {"format": REPORT_FORMAT, "complete": True,
            "provenance": {"model": "m", "random_weights": True, "unet_digest": "d", "calibration": {"digest": "c"},
                           "policy": {}, "method": {}},
            "steps": list(steps), "signal": [4.0] * n, "samples_per_step": [2] * n,
            "profiled_samples": list(range(2 * n)), "done_samples": list(range(2 * n)),
            "layers": {"unet/a/conv": {"name": "unet/a/conv", "op_type": "Conv", "macs": 10, "vector_ops": 0,
                                       "weight_params": 4, "act_elems": 8},
                       "unet/b/silu": {"name": "unet/b/silu", "op_type": "SiLU", "macs": 0, "vector_ops": 4,
                                       "weight_params": 0, "act_elems": 8}},
            "sites": {"sites": [["x", None, ["unet/a/conv"]], ["y", "unet/a/conv", ["unet/b/silu"]],
                                ["z", "unet/b/silu", []]],
                      "int8_slots": {"unet/a/conv": [["w", 0]]}, "float_inits": {},
                      "op_types": {"unet/a/conv": "Conv", "unet/b/silu": "SiLU"}},
            "noise": {"act|x|8": [0.01] * n, "act|y|8": [0.02] * n, "act|y|16": [1e-6] * n,
                      "act|y|fp16": [1e-7] * n, "act|z|8": [0.01] * n, "w|w|int8": [0.001] * n}}


def test_the_synthetic_report_is_valid():
    from edgefusion.sensitivity.report import SensitivityReport

    rep = SensitivityReport.from_dict(_report_dict())
    assert rep.predict({"unet/a/conv": Precision.W8A8, "unet/b/silu": Precision.W8A8})["sqnr_db"] == \
        pytest.approx(10 * math.log10(8.0 / (2 * 0.041)), abs=1e-6)


numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 10))


@SETTINGS
@given(st.lists(numbers, min_size=2, max_size=2), st.lists(numbers, min_size=2, max_size=2), st.booleans())
def test_noise_and_signal_values_are_accepted_iff_they_can_be_energies(noise, signal, complete):
    from edgefusion.metrics import CAP_DB
    from edgefusion.sensitivity.report import SensitivityReport

    d = _report_dict()
    d["noise"]["act|y|8"], d["signal"], d["complete"] = noise, signal, complete
    ok_noise = all(math.isfinite(x) and x >= 0 for x in noise)
    ok_signal = all(math.isfinite(x) and (x > 0 if complete else x >= 0) for x in signal)
    if ok_noise and ok_signal:
        rep = SensitivityReport.from_dict(d)
        db = rep.predict({"unet/a/conv": Precision.W8A8, "unet/b/silu": Precision.W8A8})["sqnr_db"]
        assert not math.isnan(db) and db <= CAP_DB
    else:
        with pytest.raises(EdgeFusionError, match="inconsistent"):
            SensitivityReport.from_dict(d)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=6)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(sorted(_report_dict())), st.one_of(st.none(), json_values)), min_size=1,
                max_size=3))
def test_any_damaged_report_is_a_one_line_error(damage):
    """Replace (or delete, None) top-level fields with arbitrary JSON: accepted only if still consistent."""
    from edgefusion.sensitivity.report import SensitivityReport

    d = copy.deepcopy(_report_dict())
    for key, value in damage:
        if value is None:
            d.pop(key, None)
        else:
            d[key] = value
    try:
        rep = SensitivityReport.from_dict(d)
    except EdgeFusionError as err:
        assert "\n" not in str(err)
        return
    assert rep.problem() is None and rep.steps


def test_empty_steps_and_empty_noise_are_refused():
    from edgefusion.sensitivity.report import SensitivityReport

    d = _report_dict(steps=())
    with pytest.raises(EdgeFusionError, match="no denoising steps"):
        SensitivityReport.from_dict(d)
    d = _report_dict()
    d["noise"] = {}
    with pytest.raises(EdgeFusionError, match="no noise figures"):
        SensitivityReport.from_dict(d)
