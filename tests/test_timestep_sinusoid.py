"""The UNet's timestep sinusoid is written in a form that stays accurate when every op rounds to float16 (an NPU's
float ops), and equals the original in float32 (edgefusion.graph.timestep_sinusoid)."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgefusion.graph.timestep_sinusoid import exact_timestep_sinusoids
from edgefusion.metrics import sqnr_db
from edgefusion.quant.layers import find_layers
from edgefusion.runtime.session import open_session, run_session

HALF = 160  # bk-sdm-tiny's and sd-v1.5's first block: 320 channels
STEPS = np.array([999, 961, 801, 500, 261, 21, 1, 0], np.float32)  # integers: exact in float16


def _sinusoid_model() -> onnx.ModelProto:
    """diffusers' ``get_timestep_embedding`` as torch.onnx writes it: Sin and Cos of Unsqueeze(t) x frequencies."""
    freqs = np.exp(-np.log(10000) * np.arange(HALF) / HALF).astype(np.float32)[None]
    nodes = [helper.make_node("Unsqueeze", ["timestep", "axis"], ["t"], name="unsqueeze"),
             helper.make_node("Mul", ["t", "freqs"], ["x"], name="mul"),
             helper.make_node("Sin", ["x"], ["s"], name="sin"), helper.make_node("Cos", ["x"], ["c"], name="cos"),
             helper.make_node("Concat", ["s", "c"], ["emb"], axis=-1, name="cat")]
    for n in nodes:
        n.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=f"['', 'time_proj', '{n.name}']")
        n.metadata_props.add(key="pkg.torch.onnx.fx_node", value=f"%{n.name} = call_function[target=x]")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("timestep", TensorProto.FLOAT, [len(STEPS)])],
                              [helper.make_tensor_value_info("emb", TensorProto.FLOAT, [len(STEPS), 2 * HALF])],
                              [numpy_helper.from_array(freqs, "freqs"),
                               numpy_helper.from_array(np.array([1], np.int64), "axis")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def _every_float_rounded_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose every float initializer and every float op output is rounded through float16, as an NPU that
    computes float ops in float16 holds them (the graph input, integer timesteps, is exact in float16)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16).astype(np.float32), t.name))
    nodes = []
    for n in g.node:
        nodes.append(n)
        if n.op_type in ("Cast", "Reshape", "Gather", "Unsqueeze", "Concat"):
            continue  # integer outputs, or values already on the float16 grid
        out = n.output[0]
        n.output[0] = out + "__f32"
        nodes += [helper.make_node("Cast", [out + "__f32"], [out + "__f16"], to=TensorProto.FLOAT16),
                  helper.make_node("Cast", [out + "__f16"], [out], to=TensorProto.FLOAT)]
    del g.node[:]
    g.node.extend(nodes)
    return m


def _run(model: onnx.ModelProto, tmp_path, name: str) -> np.ndarray:
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return run_session(open_session(path), {"timestep": STEPS})[0]


def test_sinusoid_rewrite_is_exact_in_float32_and_survives_float16(tmp_path):
    model = _sinusoid_model()
    x = STEPS.astype(np.float64)[:, None] * numpy_helper.to_array(model.graph.initializer[0]).astype(np.float64)
    exact = np.concatenate([np.sin(x), np.cos(x)], -1)
    before32 = _run(model, tmp_path, "before32")
    before16 = _run(_every_float_rounded_to_fp16(model), tmp_path, "before16")
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert exact_timestep_sinusoids(rewritten) == 1
    assert not {"Sin", "Cos"} & {n.op_type for n in rewritten.graph.node if n.input[0] == "x"}
    after32 = _run(rewritten, tmp_path, "after32")
    after16 = _run(_every_float_rounded_to_fp16(rewritten), tmp_path, "after16")
    assert sqnr_db(exact, before32) > 95 and sqnr_db(exact, after32) > 120  # float32: as exact, or more
    assert sqnr_db(before32, after32) > 95
    assert sqnr_db(exact, before16) < 30  # float16 angles up to 999 radians: off by up to a quarter
    assert sqnr_db(exact, after16) > 60, sqnr_db(exact, after16)
    # the new nodes join the Sin/Cos nodes' layers (a policy's "time_proj" rule still names them); the angle's Mul
    # is gone with nothing reading it
    names = {la.name for la in find_layers(rewritten, "unet")}
    assert names == {la.name for la in find_layers(model, "unet")} - {"unet/time_proj/mul"}, names
    assert "x" not in {o for n in rewritten.graph.node for o in n.output}


def test_no_sinusoid_no_rewrite():
    model = _sinusoid_model()
    model.graph.node[1].input[1] = "t"  # x = t * t: no constant frequencies
    assert exact_timestep_sinusoids(model) == 0
