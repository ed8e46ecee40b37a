"""Where an export folder keeps each component's graphs (the NPU graph, its sub-graphs, the client graph)."""

from __future__ import annotations

from pathlib import Path

COMPONENTS = ("text_encoder", "unet", "vae_decoder")


def npu_graph_files(export_dir: str | Path, component: str, manifest: dict) -> Path | list[Path]:
    """The graph the NPU runs (static batch 1): its sub-graphs when the export partitioned it, else the manifest's
    ``file`` (``unet/npu.onnx`` since client graphs exist), else ``<component>/model.onnx`` (older exports)."""
    export_dir = Path(export_dir)
    rec = (manifest.get("components") or {}).get(component) or {}
    parts = (rec.get("partition") or {}).get("files")
    if parts:
        return [export_dir / f for f in parts]
    file = rec.get("file")
    if isinstance(file, str) and file.endswith(".onnx") and (export_dir / file).is_file():
        return export_dir / file
    return export_dir / component / "model.onnx"


def client_graph_file(export_dir: str | Path, component: str) -> Path:
    """The graph onnxruntime clients (optimum, diffusers) load: ``<component>/model.onnx``."""
    return Path(export_dir) / component / "model.onnx"
