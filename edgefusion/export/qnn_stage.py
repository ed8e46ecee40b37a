"""The export's Qualcomm QNN step (``edgefusion[qnn]``): every NPU graph compiled for the HTP, its EP-context
binary written into the export folder, and the verification inputs run through the emulated HTP. Each graph is
compiled without the FP16 simulation's rounding casts, a graph without integer tensors in real float16
(``edgefusion.export.htp_float16``); the CPU comparison runs the exported graph, so ``htp_vs_cpu_sqnr_db`` covers
that conversion too."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from edgefusion.errors import EdgeFusionError

COMPONENTS = ("text_encoder", "unet", "vae_decoder")


def qnn_requested(backend: str, device: str) -> tuple[bool, str | None]:
    """Whether the export runs the QNN step for ``--backend`` and ``--device``, and a note when it is skipped.

    ``qnn``: required (a one-line error when the extra is missing); ``auto``: when the device has a QNN target and
    the extra is installed; ``emulated``: never."""
    from edgefusion.latency.qnn_backend import QNN_TARGETS, QnnHtpBackend

    if backend not in ("auto", "emulated", "qnn"):
        raise EdgeFusionError(f"unknown export backend '{backend}'", "use auto, emulated or qnn")
    if backend == "emulated" or (backend == "auto" and device not in QNN_TARGETS):
        return False, None
    if device not in QNN_TARGETS:
        raise EdgeFusionError(f"--backend qnn needs a Qualcomm device, got '{device}'",
                              f"pass --device {' or '.join(QNN_TARGETS)}")
    why = QnnHtpBackend().unavailable_reason()
    if why is None:
        return True, None
    if backend == "qnn":
        raise EdgeFusionError(f"the QNN backend cannot run here: {why}", "pip install 'edgefusion[qnn]'")
    return False, f"QNN HTP compilation skipped: {why}"


def qnn_stage(stage: str, device: str, max_samples: int) -> dict:
    """(own process) Compile, write context binaries under ``qnn/<component>/``, verify on the emulated HTP."""
    import onnx

    from edgefusion.calibration.capture import CalibrationSet
    from edgefusion.export.htp_float16 import has_fp16_simulation, htp_copy_file
    from edgefusion.latency.qnn_backend import (NOT_LATENCY, compile_for_htp, htp_session, provider_options,
                                                qnn_versions)
    from edgefusion.metrics import mean_sqnr_db
    from edgefusion.runtime.chained import ChainedSession
    from edgefusion.runtime.layout import npu_graph_files
    from edgefusion.runtime.session import open_session, run_session

    stage_dir = Path(stage)
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    ver = CalibrationSet.load(stage_dir / ".work" / "ver")
    work = stage_dir / ".work" / "qnn"
    work.mkdir(parents=True, exist_ok=True)
    options = {k: (Path(v).name if k == "backend_path" else v) for k, v in provider_options(device).items()}
    out = {"backend": "qnn", "device": device, "versions": qnn_versions(), "provider_options": options,
           "session_config": {"session.disable_cpu_ep_fallback": "1", "ep.context_enable": "1",
                              "ep.context_embed_mode": "0"},
           "latency": NOT_LATENCY, "components": {}}
    with np.load(stage_dir / ".work" / "refs.npz") as data:
        refs_file = {k: data[k] for k in data.files}
    for comp in COMPONENTS:
        found = npu_graph_files(stage_dir, comp, manifest)
        files = found if isinstance(found, list) else [found]
        graphs, contexts = [], []
        for f in files:
            ctx = stage_dir / "qnn" / comp / f"{f.stem}_ctx.onnx"
            form, source = {"htp_form": "as exported"}, f
            if has_fp16_simulation(onnx.load(str(f), load_external_data=False)):  # the HTP computes fp16 anyway
                source = work / comp / f.name
                form = htp_copy_file(f, source)
            rec = compile_for_htp(source, device, ctx, work)
            rec["graph"] = str(f.relative_to(stage_dir))
            rec |= form
            rec["context_files"] = [f"qnn/{comp}/{n}" for n in rec.get("context_files", [])]
            graphs.append(rec)
            contexts.append(ctx)
        crec = {"graphs": graphs, "compiled": sum(g["compiled"] for g in graphs), "of": len(graphs),
                "cpu_nodes": sum(g.get("cpu_nodes") or 0 for g in graphs)}
        if crec["compiled"] == len(graphs):
            crec |= _verify(comp, files, contexts, device, ver, refs_file, max_samples, open_session, htp_session,
                            ChainedSession, run_session, mean_sqnr_db)
        out["components"][comp] = crec
    out["graphs_compiled"] = sum(c["compiled"] for c in out["components"].values())
    out["graphs_total"] = sum(c["of"] for c in out["components"].values())
    out["cpu_nodes"] = sum(c["cpu_nodes"] for c in out["components"].values())
    return out


def _verify(comp, files, contexts, device, ver, refs_file, max_samples, open_session, htp_session, chained,
            run_session, mean_sqnr_db) -> dict:
    """The first ``max_samples`` verification inputs through the reloaded context binaries and through CPU ORT."""
    samples = ver.samples[comp][:max_samples]
    refs = [refs_file[f"{comp}/{i}"] for i in range(len(samples))]

    def opener_htp(p):
        return htp_session(p, device)

    t0 = time.perf_counter()
    htp = chained(contexts, opener_htp) if len(contexts) > 1 else htp_session(contexts[0], device)
    htp_out = [run_session(htp, s.inputs)[0] for s in samples]
    del htp
    htp_s = time.perf_counter() - t0
    cpu = chained(files) if len(files) > 1 else open_session(files[0])
    cpu_out = [run_session(cpu, s.inputs)[0] for s in samples]
    del cpu
    finite = all(np.isfinite(o).all() for o in htp_out)
    return {"verify_samples": len(samples), "x86_emulation_wall_s_per_sample": round(htp_s / max(len(samples), 1), 2),
            "htp_outputs_finite": bool(finite),
            "htp_vs_cpu_sqnr_db": round(mean_sqnr_db(cpu_out, htp_out), 2),
            "htp_vs_torch_sqnr_db": round(mean_sqnr_db(refs, htp_out), 2),
            "cpu_vs_torch_sqnr_db": round(mean_sqnr_db(refs, cpu_out), 2)}
