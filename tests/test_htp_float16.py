"""The HTP's real-float16 copy of a float graph: the FP16 simulation's rounding pairs and weight casts removed,
float16 tensors inside, float32 at the graph's edges, and the same outputs to fp16 rounding."""

from collections import Counter

import numpy as np
import onnx

from edgefusion.export.htp_float16 import has_fp16_simulation, htp_copy_file, is_float_graph
from edgefusion.metrics import mean_sqnr_db
from edgefusion.runtime.session import open_session, run_session


def test_float_graph_in_real_float16(tiny_exports, tiny_calibration, tmp_path):
    _, ver = tiny_calibration
    src = tiny_exports["default"] / "text_encoder" / "model.onnx"  # FP16 under the recipe: no integer tensor
    model = onnx.load(str(src), load_external_data=False)
    assert is_float_graph(model) and has_fp16_simulation(model)
    w8a8 = onnx.load(str(tiny_exports["w8a8"] / "unet" / "npu.onnx"), load_external_data=False)
    assert not has_fp16_simulation(w8a8)  # nothing FP16 to strip: the HTP compiles the graph as exported
    assert not is_float_graph(onnx.load(str(tiny_exports["default"] / "unet" / "npu.onnx"), load_external_data=False))
    casts = Counter(n.op_type for n in model.graph.node)["Cast"]
    done = htp_copy_file(src, tmp_path / "te16.onnx")
    assert done["htp_form"] == "float16" and done["cast_nodes_removed"] > 0
    out = onnx.load(str(tmp_path / "te16.onnx"))
    assert Counter(n.op_type for n in out.graph.node)["Cast"] < casts - done["cast_nodes_removed"] + 4
    assert [i.type.tensor_type.elem_type for i in out.graph.input] == \
        [i.type.tensor_type.elem_type for i in model.graph.input]
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in out.graph.output)
    weights = [t for t in out.graph.initializer if len(t.dims) >= 2]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    a, b = open_session(src), open_session(tmp_path / "te16.onnx")
    samples = ver.samples["text_encoder"]
    ref = [run_session(a, s.inputs)[0] for s in samples]
    got = [run_session(b, s.inputs)[0] for s in samples]
    assert mean_sqnr_db(ref, got) > 45.0  # fp16 rounding inside layers too, where the simulation rounds at edges
