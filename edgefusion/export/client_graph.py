"""A batch-dynamic client graph around a static batch-1 NPU graph (what ORT-based pipelines call under CFG).

optimum's ``ORTStableDiffusionPipeline`` and diffusers' ``OnnxStableDiffusionPipeline`` run the UNet once per step
on the conditional and unconditional latents together (batch 2), while the NPU graph is compiled for batch 1. The
client graph is an ONNX ``Loop`` over the batch whose body *is* the NPU graph: each iteration slices one sample
(``sample[i]``, ``timestep[i]`` or the shared timestep, ``encoder_hidden_states[i]``) and runs exactly the NPU
graph's nodes on it, so a client computes per sample what the NPU graph computes. The body's initializers may point
at the NPU graph's external data file (same folder), so the weights are stored once.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

PREFIX = "client__"


def batch_loop_graph(npu: onnx.ModelProto, batch_inputs: list[str], shared_inputs: tuple[str, ...] = ()) -> onnx.ModelProto:
    """A model with the inputs/outputs of ``npu`` but a symbolic batch (dim 0): a ``Loop`` runs ``npu`` per sample.

    ``batch_inputs`` are sliced along dim 0 per iteration; an input in ``shared_inputs`` whose first dim is 1 in the
    NPU graph (the timestep) is first expanded to the batch, so callers may pass one value for the whole batch or
    one per sample. The NPU graph's structure is copied; its initializers keep their (external) data references.
    """
    g = npu.graph
    body = onnx.GraphProto()
    body.CopyFrom(g)
    body.name = "npu_graph_per_sample"
    outer_in = {i.name for i in g.input}
    outer_out = [o.name for o in g.output]
    rename = {n: f"{PREFIX}{n}__i" for n in list(outer_in) + outer_out}
    for node in body.node:
        for k, name in enumerate(node.input):
            if name in rename:
                node.input[k] = rename[name]
        for k, name in enumerate(node.output):
            if name in rename:
                node.output[k] = rename[name]
    for vi in body.value_info:
        if vi.name in rename:
            vi.name = rename[vi.name]
    del body.input[:]
    del body.output[:]
    body.input.extend([helper.make_tensor_value_info(f"{PREFIX}iter", TensorProto.INT64, []),
                       helper.make_tensor_value_info(f"{PREFIX}cond_in", TensorProto.BOOL, [])])
    slicing = [helper.make_node("Unsqueeze", [f"{PREFIX}iter", f"{PREFIX}axis0"], [f"{PREFIX}start"]),
               helper.make_node("Add", [f"{PREFIX}start", f"{PREFIX}one"], [f"{PREFIX}end"]),
               helper.make_node("Identity", [f"{PREFIX}cond_in"], [f"{PREFIX}cond_out"])]
    outer_nodes, outer_inits = [], [helper.make_tensor(f"{PREFIX}axis0_o", TensorProto.INT64, [1], [0])]
    body.initializer.extend([helper.make_tensor(f"{PREFIX}axis0", TensorProto.INT64, [1], [0]),
                             helper.make_tensor(f"{PREFIX}one", TensorProto.INT64, [1], [1])])
    for inp in g.input:
        src = inp.name
        if inp.name in shared_inputs:  # one value for all, or one per sample: expand to the batch first
            src = f"{PREFIX}{inp.name}_expanded"
            outer_nodes.append(helper.make_node("Expand", [inp.name, f"{PREFIX}batch"], [src]))
        slicing.append(helper.make_node("Slice", [src, f"{PREFIX}start", f"{PREFIX}end", f"{PREFIX}axis0"],
                                        [rename[inp.name]]))
    npu_nodes = list(body.node)
    del body.node[:]
    body.node.extend(slicing + npu_nodes)
    scan_outs = []
    for out in g.output:
        body.output.append(helper.make_tensor_value_info(rename[out.name], out.type.tensor_type.elem_type,
                                                         _dims(out)))
        scan_outs.append(f"{PREFIX}{out.name}_stacked")
    body.output.insert(0, helper.make_tensor_value_info(f"{PREFIX}cond_out", TensorProto.BOOL, []))

    first = batch_inputs[0]
    outer_nodes = [helper.make_node("Shape", [first], [f"{PREFIX}shape"], start=0, end=1),
                   helper.make_node("Squeeze", [f"{PREFIX}shape", f"{PREFIX}axis0_o"], [f"{PREFIX}trip"]),
                   helper.make_node("Identity", [f"{PREFIX}shape"], [f"{PREFIX}batch"])] + outer_nodes
    outer_inits.append(helper.make_tensor(f"{PREFIX}true", TensorProto.BOOL, [], [True]))
    outer_nodes.append(helper.make_node("Loop", [f"{PREFIX}trip", f"{PREFIX}true"], scan_outs, body=body,
                                        name=f"{PREFIX}batch_loop"))
    for out, stacked in zip(g.output, scan_outs):  # [N, 1, ...] -> [N, ...]
        outer_nodes.append(helper.make_node("Squeeze", [stacked, f"{PREFIX}axis1"], [out.name]))
    outer_inits.append(helper.make_tensor(f"{PREFIX}axis1", TensorProto.INT64, [1], [1]))

    def batched(vi: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
        dims = _dims(vi)
        dims[0] = "batch"
        return helper.make_tensor_value_info(vi.name, vi.type.tensor_type.elem_type, dims)

    inputs = [batched(i) if i.name in batch_inputs or i.name in shared_inputs else i for i in g.input]
    outputs = [batched(o) for o in g.output]
    graph = helper.make_graph(outer_nodes, f"{g.name or 'graph'}_batched", inputs, outputs, outer_inits)
    model = helper.make_model(graph, opset_imports=list(npu.opset_import), producer_name="edgefusion")
    model.ir_version = npu.ir_version
    return model


def _dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in vi.type.tensor_type.shape.dim]


# the UNet's inputs: sliced per sample, or (the timestep) one value for the batch or one per sample
UNET_BATCH_INPUTS = ["sample", "encoder_hidden_states"]
UNET_SHARED_INPUTS = ("timestep",)


def write_client_graph(npu_path: Path, client_path: Path) -> Path:
    """Write the batch-dynamic client graph of the UNet at ``npu_path`` to ``client_path`` (same folder).

    The NPU graph's weights must be in an external data file beside it (see
    :func:`edgefusion.export.deploy_form.externalize_weights`); the client graph points at the same file."""
    npu = onnx.load(str(npu_path), load_external_data=False)
    client = batch_loop_graph(npu, UNET_BATCH_INPUTS, UNET_SHARED_INPUTS)
    onnx.save(client, str(client_path))
    onnx.checker.check_model(str(client_path))  # by path: external data resolved beside the file
    return client_path


def make_self_contained(client_path: Path) -> None:
    """Give the client graph its own copy of the weights (before the NPU graph it points at is removed)."""
    from edgefusion.export.deploy_form import externalize_weights
    from edgefusion.runtime.session import release_freed_memory

    externalize_weights(client_path)  # the same re-save: weights read from the NPU graph's data, written beside it
    release_freed_memory()


# How much less accurate against PyTorch a client that is not identical to the NPU graph may be. Inside the Loop body
# onnxruntime may pick other kernels than for the NPU graph itself (sd-v1.5 at 128x128 under `default` for
# snapdragon8gen3: two W8A16 linear layers became MatMulNBits in the body and stayed DequantizeLinear + Gemm outside),
# and a different summation order moves a few values into the neighbouring quantization bin: 33.18 dB against the
# NPU graph there, but 29.09 vs 29.22 dB against PyTorch (-0.13). (Part of that was MatMulNBits' default accuracy
# level, which computed those layers with 8-bit inputs; the project session now sets fp32 compute, see
# ``runtime/session.py``.) A mis-wired client is far off: on the same export the two samples swapped read 6.0 dB
# against PyTorch, one sample with the other's timestep -7.8 dB.
CLIENT_ACCURACY_DB = 0.5


def verify_client_graph(client_path: Path, samples: list[dict], npu_outputs: list, torch_refs: list | None = None
                        ) -> dict:
    """Run the client graph once on the first two samples stacked as a batch (as a CFG pipeline does) and compare
    with the NPU graph's outputs for them (and, when it is not identical, both with PyTorch's ``torch_refs``);
    returns the figures recorded in the manifest."""
    import numpy as np

    from edgefusion.metrics import mean_sqnr_db
    from edgefusion.runtime.session import open_session, release_freed_memory, run_session

    pair = samples[:2]
    feeds = {k: np.concatenate([s[k] for s in pair]) for k in UNET_BATCH_INPUTS}
    feeds["timestep"] = pair[0]["timestep"] if all(np.array_equal(s["timestep"], pair[0]["timestep"]) for s in pair) \
        else np.concatenate([s["timestep"] for s in pair])
    sess = open_session(client_path)
    out = run_session(sess, feeds)[0]
    del sess
    release_freed_memory()
    ref = np.concatenate([np.asarray(o) for o in npu_outputs[:2]])
    same = bool(np.array_equal(out, ref))
    record = {"file": f"{client_path.parent.name}/{client_path.name}",
              "form": "Loop over the batch; body = the NPU graph", "batch_checked": len(pair),
              "identical_to_npu_graph": same, "max_abs_diff_vs_npu_graph": float(np.abs(out - ref).max()),
              "vs_npu_graph_sqnr_db": None if same else round(mean_sqnr_db([ref], [out]), 2)}
    if not same and torch_refs is not None:
        torch_ref = np.concatenate([np.asarray(r) for r in torch_refs[:2]])
        record["vs_torch_sqnr_db"] = round(mean_sqnr_db([torch_ref], [out]), 2)
        record["npu_graph_vs_torch_sqnr_db"] = round(mean_sqnr_db([torch_ref], [ref]), 2)
    return record


def client_check_problem(record: dict) -> str | None:
    """Why the client graph recorded by :func:`verify_client_graph` cannot ship, or None: it must be identical to
    the NPU graph, within float rounding of it (80 dB), or as accurate against PyTorch within
    :data:`CLIENT_ACCURACY_DB` (other kernels, the same computation)."""
    if record["identical_to_npu_graph"] or record["vs_npu_graph_sqnr_db"] >= 80:
        return None
    client, npu = record.get("vs_torch_sqnr_db"), record.get("npu_graph_vs_torch_sqnr_db")
    if client is not None and npu is not None and client >= npu - CLIENT_ACCURACY_DB:
        return None
    against = "" if client is None else f"; vs PyTorch {client} dB, the NPU graph {npu} dB"
    return f"the batch-dynamic client differs from the NPU graph ({record['vs_npu_graph_sqnr_db']} dB{against})"
