"""Device profiles: every shipped figure tagged with its source, and nonsense refused with the field named
(including property-based checks, bounded in time)."""

from __future__ import annotations

import json
import math
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefusion.errors import EdgeFusionError
from edgefusion.latency.device import DeviceProfile, device_names, load_device
from edgefusion.latency.profile_schema import FIELDS
from edgefusion.resources import config_dir

BOUNDED = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _profile_dict(name="exynos2400") -> dict:
    return load_device(name).to_dict()


def test_shipped_profiles_are_valid_and_every_figure_is_tagged():
    assert {"exynos2400", "exynos2200", "generic", "snapdragon8gen3"} <= set(device_names())
    keys = {k for fields in FIELDS.values() for k in fields}
    for name in device_names():
        d = load_device(name)
        assert d.sram_bytes > 0 and d.dram_bytes_per_s > 0 and d.tensor_macs_per_s > 0
        lines = [ln for ln in (config_dir("devices") / f"{name}.yaml").read_text().splitlines()
                 if ln.strip().split(":")[0] in keys]
        assert len(lines) == sum(len(f) for f in FIELDS.values()), name
        untagged = [ln for ln in lines if not re.search(r"# \[(ISSCC|public|fit|assumed)\]", ln)]
        assert not untagged, f"{name}: every hardware figure says where it comes from: {untagged}"
        assert d.overheads["per_node_us"] <= 50  # a compiled graph's kernel launch: tens of microseconds at most
        assert d.tensor_engine["efficiency"] <= 1 and d.vector_engine["efficiency"] <= 1
    ex = load_device("exynos2400")
    assert ex.tensor_engine["macs_per_cycle"] == 17408 and ex.memory["sram_mb"] == 6.0


def test_snapdragon_profile_carries_the_public_figures():
    sd = load_device("snapdragon8gen3")
    assert sd.memory["sram_mb"] == 8.0 and sd.memory["dram_gb_per_s"] == 76.8
    assert 2 * sd.tensor_peak_macs_per_s / 1e12 == pytest.approx(45, rel=0.01)  # ~45 TOPS int8
    assert "W8A16" in sd.op_precisions["Conv"] and sd.limits["max_graph_weight_mb"] == 2048
    text = (config_dir("devices") / "snapdragon8gen3.yaml").read_text()
    fitted_elsewhere = [ln for ln in text.splitlines() if "exynos2400's fitted value" in ln]
    assert fitted_elsewhere and all("[assumed]" in ln for ln in fitted_elsewhere)
    assert "[fit]" not in text  # nothing was fitted on this chip


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d["memory"].__setitem__("dram_gb_per_s", -5), "memory.dram_gb_per_s"),
    (lambda d: d["memory"].__setitem__("sram_mb", 0), "memory.sram_mb"),
    (lambda d: d["tensor_engine"].__setitem__("efficiency", 1.5), "tensor_engine.efficiency"),
    (lambda d: d["tensor_engine"].__setitem__("efficiency", True), "tensor_engine.efficiency"),
    (lambda d: d["tensor_engine"].__setitem__("efficency", 0.5), "efficency"),
    (lambda d: d.pop("limits"), "limits"),
    (lambda d: d.pop("host"), "host"),
    (lambda d: d["overheads"].pop("per_node_us"), "overheads.per_node_us"),
    (lambda d: d["overheads"].__setitem__("handoff_us", float("inf")), "overheads.handoff_us"),
    (lambda d: d["host"].__setitem__("ops", "IsNaN"), "host.ops"),
    (lambda d: d["throughput"]["tensor_engine"].__setitem__("INT4", 0.5), "INT4"),
    (lambda d: d["throughput"]["vector_engine"].__setitem__("W8A8", float("nan")), "throughput.vector_engine.W8A8"),
    (lambda d: d["throughput"]["vector_engine"].__setitem__("FP16", True), "throughput.vector_engine.FP16"),
    (lambda d: d["vector_ops_per_element"].__setitem__("Softmax", float("nan")), "vector_ops_per_element.Softmax"),
    (lambda d: d["vector_ops_per_element"].__setitem__("GELU", float("inf")), "vector_ops_per_element.GELU"),
    (lambda d: d["vector_ops_per_element"].__setitem__("SiLU", False), "vector_ops_per_element.SiLU"),
    (lambda d: d["op_precisions"].__setitem__("Conv", []), "op_precisions.Conv"),
    (lambda d: d.__setitem__("name", 7), "name"),
    (lambda d: d.__setitem__("weights", {"per_tensor": ["MatMul"]}), "weights has unknown key"),
    (lambda d: d.__setitem__("weights", {"per_tensor_with_16bit_activations": "MatMul"}),
     "weights.per_tensor_with_16bit_activations"),
    (lambda d: d.__setitem__("activations", {"signed_16bit": ["MatMul"]}), "activations has unknown key"),
    (lambda d: d.__setitem__("activations", {"signed_16bit_second_input": [3]}),
     "activations.signed_16bit_second_input"),
])
def test_bad_profiles_are_refused_with_the_field_named(tmp_path, mutate, words):
    data = _profile_dict()
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(EdgeFusionError) as err:
        load_device(str(path))
    assert words in str(err.value) and "\n" not in str(err.value)


def test_yaml_special_floats_are_refused(tmp_path):
    text = (config_dir("devices") / "generic.yaml").read_text().replace("Softmax: 5", "Softmax: .nan")
    path = tmp_path / "nan.yaml"
    path.write_text(text)
    with pytest.raises(EdgeFusionError, match=r"vector_ops_per_element.Softmax = nan"):
        load_device(str(path))


def test_unknown_device_names_the_choices():
    with pytest.raises(EdgeFusionError, match="unknown device 'exynos9999'.*exynos2400"):
        load_device("exynos9999")


NUMERIC = [(s, k, kind) for s, fields in FIELDS.items() for k, kind in fields.items() if kind != "ops"]
BAD_VALUES = st.one_of(st.just(float("nan")), st.just(float("inf")), st.just(float("-inf")), st.booleans(),
                       st.text(max_size=5), st.none(), st.lists(st.integers(), max_size=2),
                       st.floats(max_value=-1e-9, allow_nan=False), st.integers(max_value=-1))


@BOUNDED
@given(field=st.sampled_from(NUMERIC), value=BAD_VALUES)
def test_any_nonsense_figure_is_refused_in_one_line_naming_it(field, value):
    section, key, kind = field
    data = _profile_dict("generic")
    data[section][key] = value
    if kind == "nonneg" and isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        return  # 0 is a valid overhead
    with pytest.raises(EdgeFusionError) as err:
        DeviceProfile.from_dict(data)
    assert f"{section}.{key}" in str(err.value) and "\n" not in str(err.value)


@BOUNDED
@given(table=st.sampled_from(["tensor_engine", "vector_engine", "ops"]), key=st.sampled_from(["W8A8", "W8A16", "FP16"]),
       value=st.one_of(BAD_VALUES, st.floats(min_value=1.0001, max_value=1e6)))
def test_any_nonsense_rate_is_refused(table, key, value):
    data = _profile_dict("generic")
    if table == "ops":
        data["vector_ops_per_element"]["Softmax"] = value
        where = "vector_ops_per_element.Softmax"
        if isinstance(value, float) and math.isfinite(value) and value > 0:
            return  # any positive count is valid
    else:
        data["throughput"][table][key] = value
        where = f"throughput.{table}.{key}"
    with pytest.raises(EdgeFusionError) as err:
        DeviceProfile.from_dict(data)
    assert where in str(err.value) and "\n" not in str(err.value)


POSITIVE = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)


@BOUNDED
@given(field=st.sampled_from(NUMERIC), value=POSITIVE)
def test_valid_figures_load_and_round_trip(tmp_path_factory, field, value):
    section, key, kind = field
    data = _profile_dict("generic")
    data[section][key] = min(value, 1.0) if kind == "fraction" else value
    profile = DeviceProfile.from_dict(data)
    path = tmp_path_factory.mktemp("rt") / "p.yaml"
    path.write_text(yaml.safe_dump(profile.to_dict()))
    assert load_device(str(path)) == profile
    saved = tmp_path_factory.mktemp("rt") / "p.json"
    profile.save(saved)
    assert load_device(str(saved)) == profile


def test_weight_storage_needs_are_data():
    """Weight storage needs are device data: no shipped profile asks for per-tensor MatMul weights under 16-bit
    activations any more (the QNN target did until its HTP was re-measured; README "Qualcomm QNN"), a profile file
    may, and the section round-trips."""
    for name in ("snapdragon8gen3", "exynos2400"):
        assert load_device(name).weights == {"per_tensor_with_16bit_activations": []}
    d = load_device("snapdragon8gen3").to_dict()
    d["weights"] = {"per_tensor_with_16bit_activations": ["MatMul"]}
    d = DeviceProfile.from_dict(d)
    assert DeviceProfile.from_dict(d.to_dict()).weights == d.weights


def test_activation_storage_needs_are_data():
    """The QNN target asks for int16 second inputs of MatMuls between two 16-bit activations (its execution
    provider makes a uint16 one 8-bit; README "Qualcomm QNN"); the others ask for nothing; the section round-trips."""
    assert load_device("snapdragon8gen3").activations == {"signed_16bit_second_input": ["MatMul"]}
    for name in ("exynos2400", "generic"):
        assert load_device(name).activations == {"signed_16bit_second_input": []}
    d = load_device("snapdragon8gen3")
    assert DeviceProfile.from_dict(d.to_dict()).activations == d.activations


def test_storage_needs_reach_the_quantizer_as_one_object():
    """The two sections become one ``StorageNeeds`` (what ``quantize_graph`` takes), which round-trips as JSON; a
    lone op type given as a string is refused rather than read as a set of letters."""
    from edgefusion.quant.storage import StorageNeeds

    need = load_device("snapdragon8gen3").storage_needs()
    assert need == StorageNeeds(signed_16bit_second_input=frozenset({"MatMul"}))
    assert load_device("exynos2400").storage_needs() == StorageNeeds()
    d = load_device("snapdragon8gen3").to_dict()
    d["weights"] = {"per_tensor_with_16bit_activations": ["MatMul", "Gemm"]}
    need = DeviceProfile.from_dict(d).storage_needs()
    assert need.per_tensor_16bit_input_weights == {"MatMul", "Gemm"}
    assert StorageNeeds.from_dict(json.loads(json.dumps(need.to_dict()))) == need
    with pytest.raises(TypeError, match="op type names"):
        StorageNeeds(signed_16bit_second_input="MatMul")
