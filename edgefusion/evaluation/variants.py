"""What is compared: the PyTorch float pipeline (the reference), the float ONNX graphs (from an export made with
``--keep-float``) and each quantized export, all of one model (exports of different models are refused)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from edgefusion.errors import EdgeFusionError
from edgefusion.evaluation.latency_view import read_latency

TORCH, ONNX_FLOAT, EXPORT = "torch_float", "onnx_float", "export"
GRAPHS = ("text_encoder", "unet", "vae_decoder")


@dataclass
class Variant:
    """One column of the comparison. ``key`` names its image folder; ``identity`` is a digest of the export's
    manifest (what shards and merges compare; paths may differ between machines)."""

    key: str
    label: str
    kind: str  # torch_float | onnx_float | export
    export_dir: str | None = None  # relative to the evaluation folder where possible
    policy: str | None = None
    identity: str = ""
    latency: dict | None = None

    def to_dict(self) -> dict:
        """Plain-dict form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Variant:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


@dataclass
class ExportInfo:
    """An export folder and its manifest (raw dict: read defensively)."""

    path: Path
    manifest: dict

    def model_label(self) -> str:
        """A short description of the model the export came from."""
        return model_label(self.manifest.get("source", {}))


def model_label(source: dict) -> str:
    """``embedded model``, ``preset tiny (random weights)`` or ``local <path>`` for a manifest ``source``."""
    from edgefusion.models.source import embedded_model_dir

    ref = str(source.get("ref", "?"))
    if source.get("kind") == "local" and (ref == "embedded" or Path(ref) == embedded_model_dir().resolve()):
        return "embedded model"
    if source.get("kind") == "preset":
        return f"preset {ref}" + (" (random weights)" if source.get("random_weights") else "")
    return f"{source.get('kind', '?')} {ref}"


def read_export(path: str | Path) -> ExportInfo:
    """Load an export folder's manifest (``read_export_manifest``'s checks, plus a policy and every NPU graph file
    the manifest names); one-line errors for folders that are not exports."""
    from edgefusion.runtime.pipeline import read_export_manifest

    path = Path(path).expanduser()
    manifest = read_export_manifest(path)
    if "policy" not in manifest:
        raise EdgeFusionError(f"'{path / 'manifest.json'}' is not an edgefusion export manifest (no policy)",
                              "pass folders written by `edgefusion export`")
    for comp in GRAPHS:
        for rel in _graph_files(manifest, comp):
            if not (path / rel).is_file():
                raise EdgeFusionError(f"export folder '{path}' lacks {rel}", "re-run `edgefusion export`")
    return ExportInfo(path.resolve(), manifest)


def _graph_files(manifest: dict, comp: str) -> list[str]:
    """The NPU graph's file(s) relative to the export (the manifest's ``file``, or the sub-graph files of a
    partitioned component), as the runtime reads them."""
    rec = manifest.get("components", {}).get(comp)
    parts = (rec.get("partition") or {}).get("files") if isinstance(rec, dict) else None
    if isinstance(parts, list) and parts:
        return [str(f) for f in parts]
    file = rec.get("file") if isinstance(rec, dict) else None
    return [file] if isinstance(file, str) and file.endswith(".onnx") else [f"{comp}/model.onnx"]


def _same_model_key(manifest: dict) -> dict:
    src = manifest.get("source", {})
    return {"source": {k: src.get(k) for k in ("kind", "ref", "random_weights", "sampler")},
            "shapes": manifest.get("shapes")}


def check_same_model(exports: list[ExportInfo]) -> list[str]:
    """Refuse exports of different models (source or shapes differ); returns notes on lesser differences
    (calibration settings), which are allowed."""
    first = exports[0]
    for other in exports[1:]:
        a, b = _same_model_key(first.manifest), _same_model_key(other.manifest)
        if a["source"] != b["source"]:
            raise EdgeFusionError(f"exports '{first.path}' ({first.model_label()}) and '{other.path}' "
                                  f"({other.model_label()}) come from different models",
                                  "compare exports of one model only")
        if a["shapes"] != b["shapes"]:
            raise EdgeFusionError(f"exports '{first.path}' and '{other.path}' have different shapes "
                                  f"({a['shapes']} vs {b['shapes']})", "compare exports made at one image size")
    notes = []
    cal = {str(e.path): {k: e.manifest.get("calibration", {}).get(k) for k in ("prompts", "steps", "seed")}
           for e in exports}
    if len({json.dumps(v, sort_keys=True) for v in cal.values()}) > 1:
        notes.append("exports were calibrated with different settings: "
                     + "; ".join(f"{Path(p).name}: {v}" for p, v in cal.items()))
    return notes


def export_identity(manifest: dict) -> str:
    """Digest of what defines an export's graphs (model, policy, calibration, creation time)."""
    key = {k: manifest.get(k) for k in ("source", "policy", "calibration", "created", "edgefusion_version")}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-") or "export"


def _rel(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive (Windows)
        return str(path)


def float_graphs(export: ExportInfo) -> dict[str, Path] | None:
    """The export's float ONNX graphs (``float/``, kept with ``--keep-float``), or ``None``."""
    graphs = {c: export.path / "float" / c / "model.onnx" for c in GRAPHS}
    return graphs if all(p.is_file() for p in graphs.values()) else None


def resolve_variants(exports: list[ExportInfo], base: Path,
                     float_onnx: bool = True) -> tuple[list[Variant], dict[str, ExportInfo], list[str]]:
    """The columns, reference first: torch float, onnx float (from the first export that kept its float graphs,
    when ``float_onnx``), then each export. ``base`` is the evaluation folder (export paths are kept relative to
    it). Returns the variants, the export behind each ONNX variant (by key) and notes for the report."""
    if not exports:
        raise EdgeFusionError("no export folders given", "pass one or more folders written by `edgefusion export`")
    seen = {}
    for e in exports:
        if e.path in seen:
            raise EdgeFusionError(f"export folder '{e.path}' is given twice", "pass each export once")
        seen[e.path] = e
    notes = check_same_model(exports)
    variants = [Variant("torch-float", "PyTorch float", TORCH)]
    behind: dict[str, ExportInfo] = {}
    if float_onnx:
        donor = next((e for e in exports if float_graphs(e)), None)
        if donor is None:
            notes.append("no float ONNX column: none of the exports kept its float graphs (export one with "
                         "`edgefusion export --keep-float`)")
        else:
            variants.append(Variant("onnx-float", "ONNX float", ONNX_FLOAT, _rel(donor.path, base), None,
                                    export_identity(donor.manifest) + "/float"))
            behind["onnx-float"] = donor
    labels = [str(e.manifest.get("policy", {}).get("name") or e.path.name) for e in exports]
    for e, label in zip(exports, labels):
        if labels.count(label) > 1:
            label = f"{label} ({e.path.name})"
        key = _slug(label)
        while key in {v.key for v in variants}:
            key += "-"
        variants.append(Variant(key, label, EXPORT, _rel(e.path, base), e.manifest.get("policy", {}).get("name"),
                                export_identity(e.manifest), read_latency(e.manifest)))
        behind[key] = e
    return variants, behind, notes
