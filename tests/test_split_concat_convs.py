"""The skip split (``edgefusion.graph.split_concat_convs``, measured in ``bench/fidelity.py``, not in the export):
exact in float, one layer per split convolution, 16-bit partial sums, and the profiler's sites agree with the plan."""

import shutil

import onnx
import pytest

from edgefusion.graph.split_concat_convs import is_partial_sum, split_concat_convs_file
from edgefusion.metrics import mean_sqnr_db
from edgefusion.quant.graph_index import GraphIndex
from edgefusion.quant.layers import ensure_node_names, find_layers
from edgefusion.quant.plan import plan_quantization
from edgefusion.quant.policy import load_policy, resolve_policy
from edgefusion.quant.precision import Precision
from edgefusion.quant.quantize_graph import quantize_graph
from edgefusion.runtime.session import open_session, run_session
from edgefusion.sensitivity.sites import QuantSites


@pytest.fixture(scope="module")
def split_unet(tiny_float_graphs, tmp_path_factory):
    src = tiny_float_graphs["unet"].parent
    dst = tmp_path_factory.mktemp("split") / "unet"
    shutil.copytree(src, dst)
    n = split_concat_convs_file(dst / "model.onnx")
    return dst / "model.onnx", n


def _policy():
    spec = load_policy("default")
    spec.rules.insert(2, ("op:Concat", Precision.FP16))
    return spec


def test_split_is_exact_in_float_and_keeps_layer_names(tiny_float_graphs, tiny_calibration, split_unet):
    path, n = split_unet
    before = onnx.load(str(tiny_float_graphs["unet"]), load_external_data=False)
    after = onnx.load(str(path), load_external_data=False)
    n_cat_conv = sum(1 for c in before.graph.node if c.op_type == "Conv"
                     and any(p.op_type == "Concat" and p.output[0] == c.input[0] for p in before.graph.node))
    assert n == n_cat_conv > 0
    partial = [x for x in after.graph.node if is_partial_sum(x)]
    assert sum(1 for x in partial if x.op_type == "Conv") == 2 * n  # two halves per skip concatenation
    for m in (before, after):
        ensure_node_names(m)
    names = lambda m: [la.name for la in find_layers(m, "unet") if not la.passthrough]  # noqa: E731
    assert names(after) == names(before)
    _, ver = tiny_calibration
    fs, ss = open_session(tiny_float_graphs["unet"]), open_session(path)
    ref = [run_session(fs, s.inputs)[0] for s in ver.samples["unet"]]
    out = [run_session(ss, s.inputs)[0] for s in ver.samples["unet"]]
    assert mean_sqnr_db(ref, out) > 100.0  # summation order only


def test_partial_sums_are_16_bit_and_the_sites_agree(tiny_calibration, split_unet, tmp_path):
    path, _ = split_unet
    cal, _ = tiny_calibration
    qg = quantize_graph(path, tmp_path / "q.onnx", "unet", _policy(), [s.inputs for s in cal.samples["unet"]])
    model = onnx.load(str(path), load_external_data=False)
    ensure_node_names(model)
    partial = {x.output[0] for x in model.graph.node if is_partial_sum(x)}
    assert partial and all(qg.plan.act_bits.get(t) == 16 for t in partial)
    assert "Concat" not in qg.qdq_by_op_type()  # the FP16 concatenation is not requantized
    layers = find_layers(model, "unet")
    resolved = resolve_policy(_policy(), layers)
    idx = GraphIndex.build(model)
    plan = plan_quantization(model, layers, resolved, idx)
    sites = QuantSites.build(model, layers, idx)
    fast = sites.plan(resolved.precisions)
    assert fast.act_bits == plan.act_bits and sorted(fast.fp16_tensors) == sorted(plan.fp16_tensors)
    assert QuantSites.from_dict(sites.to_dict()).plan(resolved.precisions).act_bits == plan.act_bits
